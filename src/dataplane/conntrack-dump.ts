import { endianness } from 'node:os';
import netlink from 'netlink';
import {
  CTA,
  CTA_IP,
  CTA_PROTO,
  CTA_TUPLE,
  ctType,
  IPCTNL_MSG_CT_GET,
  IPCTNL_MSG_CT_NEW,
  NLA_F_NESTED,
  nfgenmsg,
  NLM_F,
  NLMSG_DONE,
  NLMSG_ERROR,
  nlmsg,
  openCtnetlink,
} from './ctnetlink.js';
import { attr } from './netlink.js';

// Reads the IPv4 conntrack table over ctnetlink (a dump, like `conntrack -L -f ipv4`):
// what SNAT port pressure needs. It walks the whole table, so it runs on demand and on a
// slow timer, never per packet or per scrape.

const NLM_F_REQUEST_DUMP = 0x301;
const CTA_FILTER_ORIG_FLAGS = 1;
const CTA_FILTER_REPLY_FLAGS = 2;
const CTA_FILTER_FLAG_CTA_IP_DST = 1 << 1;

/** CTA_FILTER's flags are NLA_U32: host byte order (unlike addresses and ports). */
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  if (endianness() === 'LE') b.writeUInt32LE(n >>> 0);
  else b.writeUInt32BE(n >>> 0);
  return b;
};

export interface Tuple {
  readonly src: string;
  readonly dst: string;
  /** IP protocol number (6 tcp, 17 udp, 1 icmp, ...). */
  readonly proto: number;
  /** 0 for protocols without ports. */
  readonly sport: number;
  readonly dport: number;
}

export interface Connection {
  readonly orig: Tuple;
  /** The reply direction: after SNAT its destination is the translated source (floating IP and port). */
  readonly reply: Tuple;
}

const ipv4 = (b: Buffer): string => [...b.subarray(0, 4)].join('.');

/** A CTA.TUPLE_ORIG or CTA.TUPLE_REPLY attribute's contents. */
export function tuple(data: Buffer): Tuple {
  let src = '';
  let dst = '';
  let proto = 0;
  let sport = 0;
  let dport = 0;
  netlink.parseAttributes(data, (a) => {
    if (a.type === CTA_TUPLE.IP)
      netlink.parseAttributes(a.data, (ip) => {
        if (ip.type === CTA_IP.V4_SRC && ip.data.length >= 4) src = ipv4(ip.data);
        if (ip.type === CTA_IP.V4_DST && ip.data.length >= 4) dst = ipv4(ip.data);
      });
    if (a.type === CTA_TUPLE.PROTO)
      netlink.parseAttributes(a.data, (p) => {
        if (p.type === CTA_PROTO.NUM && p.data.length >= 1) proto = p.data[0]!;
        if (p.type === CTA_PROTO.SRC_PORT && p.data.length >= 2) sport = p.data.readUInt16BE(0);
        if (p.type === CTA_PROTO.DST_PORT && p.data.length >= 2) dport = p.data.readUInt16BE(0);
      });
  });
  return { src, dst, proto, sport, dport };
}

/**
 * The kernel's filter (CTA_FILTER, Linux 5.9+): only entries whose reply goes to `ip`,
 * i.e. connections SNATed to it, cross to user space; the kernel still walks the table.
 */
function replyDestinationFilter(ip: string): Buffer {
  const address = Buffer.from(ip.split('.').map(Number));
  return Buffer.concat([
    attr(CTA.TUPLE_REPLY, attr(CTA_TUPLE.IP, attr(CTA_IP.V4_DST, address))),
    attr(
      CTA.FILTER | NLA_F_NESTED,
      Buffer.concat([
        attr(CTA_FILTER_ORIG_FLAGS, u32(0)),
        attr(CTA_FILTER_REPLY_FLAGS, u32(CTA_FILTER_FLAG_CTA_IP_DST)),
      ]),
    ),
  ]);
}

/**
 * The payloads (after nfgenmsg) of the IPv4 entries the kernel tracks in this network
 * namespace: those whose reply goes to `replyDestination` if given (filtered in the kernel
 * where it can), else all. Callers filter again: an older kernel may ignore the filter.
 */
export async function dumpEntries(replyDestination?: string): Promise<Buffer[]> {
  let failed: (e: Error) => void = () => undefined;
  const socketError = new Promise<never>((_, reject) => (failed = reject));
  socketError.catch(() => undefined);
  const socket = openCtnetlink((e) => failed(e));
  try {
    const header = nfgenmsg();
    const request = replyDestination ? Buffer.concat([header, replyDestinationFilter(replyDestination)]) : header;
    const [messages] = await Promise.race([
      socket.request(ctType(IPCTNL_MSG_CT_GET), request, { flags: NLM_F_REQUEST_DUMP, timeout: 5000 }),
      socketError,
    ]);
    return messages.filter((m) => m.type === ctType(IPCTNL_MSG_CT_NEW)).map((m) => m.data.subarray(4));
  } catch (e) {
    throw new Error(`netlink dump of the conntrack table failed: ${(e as Error).message}`, { cause: e });
  } finally {
    socket.socket.close();
  }
}

/** The IPv4 connections the kernel tracks (see dumpEntries): their tuples. */
export async function dumpConnections(replyDestination?: string): Promise<Connection[]> {
  const out: Connection[] = [];
  for (const data of await dumpEntries(replyDestination)) {
    let orig: Tuple | undefined;
    let reply: Tuple | undefined;
    netlink.parseAttributes(data, (a) => {
      if (a.type === CTA.TUPLE_ORIG) orig = tuple(a.data);
      if (a.type === CTA.TUPLE_REPLY) reply = tuple(a.data);
    });
    if (orig && reply) out.push({ orig, reply });
  }
  return out;
}

/**
 * Like dumpEntries, but hands each entry's payload to `each` as its datagram arrives: a
 * dump of 100,000 entries collected in one go held the event loop for 650 ms (peers call
 * a node Down after 300 ms); a datagram holds about a hundred.
 */
export function streamEntries(replyDestination: string | undefined, each: (payload: Buffer) => void): Promise<void> {
  const sock = new netlink.RawNetlinkSocket(netlink.Protocol.NETFILTER, {
    recvBufferSize: 4 << 20,
    sendBufferSize: 65536,
  });
  const seq = Math.floor(Math.random() * 0x7fffffff);
  const header = nfgenmsg();
  const payload = replyDestination ? Buffer.concat([header, replyDestinationFilter(replyDestination)]) : header;
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error('netlink dump of the conntrack table: no end after 60 s')), 60_000);
    const finish = (e?: Error) => {
      clearTimeout(timer);
      sock.close();
      if (e) reject(new Error(`netlink dump of the conntrack table failed: ${e.message}`, { cause: e }));
      else resolve();
    };
    sock.on('error', (e) => finish(e));
    sock.on('message', (datagram) => {
      try {
        for (const m of netlink.parseMessages(datagram)) {
          if (m.seq !== seq) continue;
          if (m.type === NLMSG_DONE) return finish();
          if (m.type === NLMSG_ERROR) {
            const errno = m.data.length >= 4 ? -m.data.readInt32LE(0) : 0;
            if (errno) return finish(new Error(`errno ${errno}`));
          } else if (m.type === ctType(IPCTNL_MSG_CT_NEW)) each(m.data.subarray(4));
        }
      } catch (e) {
        finish(e as Error);
      }
    });
    sock.send([nlmsg(ctType(IPCTNL_MSG_CT_GET), NLM_F.REQUEST | NLM_F.DUMP, seq, payload)], {}, (e) => e && finish(e));
  });
}
