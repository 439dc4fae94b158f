import { endianness } from 'node:os';
import { getSystemErrorName } from 'node:util';
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
} from './ctnetlink.js';
import netlink from './netlink-lib.js';
import { attr } from './netlink.js';

// Reads the IPv4 conntrack table over ctnetlink (a dump, like `conntrack -L -f ipv4`):
// what SNAT port pressure needs. It walks the whole table, so it runs on demand and on a
// slow timer, never per packet or per scrape; and it streams, so that a big table never
// holds up the event loop.

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

// A hand-rolled walk over the attributes, not the library's parser: a dump of 100,000
// entries through it allocated some twenty objects per entry, and the garbage was the cost.
const LE = endianness() === 'LE';
const u16 = (b: Buffer, at: number) => (LE ? b.readUInt16LE(at) : b.readUInt16BE(at));
const u32h = (b: Buffer, at: number) => (LE ? b.readUInt32LE(at) : b.readUInt32BE(at));
/** Attribute types carry NLA_F_NESTED / NLA_F_NET_BYTEORDER in their top bits. */
const NLA_TYPE_MASK = 0x3fff;

/** Calls `fn(type, start, end)` for each attribute in b[start, end). */
function eachAttribute(b: Buffer, start: number, end: number, fn: (type: number, from: number, to: number) => void) {
  for (let at = start; at + 4 <= end;) {
    const len = u16(b, at);
    if (len < 4 || at + len > end) return;
    fn(u16(b, at + 2) & NLA_TYPE_MASK, at + 4, at + len);
    at += (len + 3) & ~3;
  }
}

const ipv4 = (b: Buffer, at: number): string => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;

function tupleAt(b: Buffer, start: number, end: number): Tuple {
  let src = '';
  let dst = '';
  let proto = 0;
  let sport = 0;
  let dport = 0;
  eachAttribute(b, start, end, (type, from, to) => {
    if (type === CTA_TUPLE.IP)
      eachAttribute(b, from, to, (t, f, e) => {
        if (t === CTA_IP.V4_SRC && e - f >= 4) src = ipv4(b, f);
        if (t === CTA_IP.V4_DST && e - f >= 4) dst = ipv4(b, f);
      });
    if (type === CTA_TUPLE.PROTO)
      eachAttribute(b, from, to, (t, f, e) => {
        if (t === CTA_PROTO.NUM && e - f >= 1) proto = b[f]!;
        if (t === CTA_PROTO.SRC_PORT && e - f >= 2) sport = b.readUInt16BE(f);
        if (t === CTA_PROTO.DST_PORT && e - f >= 2) dport = b.readUInt16BE(f);
      });
  });
  return { src, dst, proto, sport, dport };
}

/** A CTA.TUPLE_ORIG or CTA.TUPLE_REPLY attribute's contents. */
export const tuple = (data: Buffer): Tuple => tupleAt(data, 0, data.length);

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

/** A dump's datagrams may stop coming (a wedged socket): give up after this long without one. */
const IDLE_TIMEOUT_MS = 5000;

/** The connection in a message's payload b[start, end) (after the nfgenmsg header). */
function connection(b: Buffer, start: number, end: number): Connection | undefined {
  let orig: Tuple | undefined;
  let reply: Tuple | undefined;
  eachAttribute(b, start, end, (type, from, to) => {
    if (type === CTA.TUPLE_ORIG) orig = tupleAt(b, from, to);
    if (type === CTA.TUPLE_REPLY) reply = tupleAt(b, from, to);
  });
  return orig && reply ? { orig, reply } : undefined;
}

/**
 * Hands `each` the payload (after nfgenmsg) of every IPv4 entry the kernel tracks in this
 * network namespace: those whose reply goes to `replyDestination` if given (filtered in
 * the kernel where it can), else all. Callers filter again: an older kernel may ignore
 * the filter.
 *
 * Streamed, datagram by datagram, on a raw socket: the library's request() would gather
 * the whole dump and hand it over in one callback, and parsing 100,000 entries at once
 * holds the event loop (and the heartbeats) for about a second.
 */
export function streamEntries(replyDestination: string | undefined, each: (payload: Buffer) => void): Promise<void> {
  // A big receive buffer: the kernel fills it while the loop is busy elsewhere.
  const socket = new netlink.RawNetlinkSocket(netlink.Protocol.NETFILTER, {
    recvBufferSize: 4 << 20,
    sendBufferSize: 65536,
  });
  const seq = 1;
  return new Promise<void>((resolve, reject) => {
    let idle: NodeJS.Timeout | undefined;
    const finish = (err?: Error) => {
      clearTimeout(idle);
      socket.close();
      if (err) reject(new Error(`netlink dump of the conntrack table failed: ${err.message}`, { cause: err }));
      else resolve();
    };
    const waitMore = () => {
      clearTimeout(idle);
      idle = setTimeout(() => finish(new Error(`no answer for ${IDLE_TIMEOUT_MS} ms`)), IDLE_TIMEOUT_MS);
    };
    socket.on('error', finish);
    socket.on('message', (datagram) => {
      try {
        // struct nlmsghdr: length u32, type u16, flags u16, seq u32, port u32 (host order).
        for (let at = 0; at + 16 <= datagram.length;) {
          const len = u32h(datagram, at);
          if (len < 16 || at + len > datagram.length) throw new Error(`a message of ${len} bytes at ${at}: truncated`);
          const type = u16(datagram, at + 4);
          if (u32h(datagram, at + 8) === seq) {
            if (type === NLMSG_DONE) return finish();
            if (type === NLMSG_ERROR) {
              const errno = LE ? datagram.readInt32LE(at + 16) : datagram.readInt32BE(at + 16);
              if (errno !== 0) return finish(new Error(`the kernel refused it: ${errnoName(errno)}`));
            } else if (type === ctType(IPCTNL_MSG_CT_NEW)) each(datagram.subarray(at + 16 + 4, at + len));
          }
          at += (len + 3) & ~3;
        }
        waitMore();
      } catch (e) {
        finish(e as Error);
      }
    });
    const header = nfgenmsg();
    const request = replyDestination ? Buffer.concat([header, replyDestinationFilter(replyDestination)]) : header;
    const type = ctType(IPCTNL_MSG_CT_GET);
    socket.send(
      netlink.formatMessage({ type, flags: NLM_F.REQUEST | NLM_F.DUMP, seq, port: 0, data: request }),
      {},
      (err) => (err ? finish(err) : undefined),
    );
    waitMore();
  });
}

/** Calls `visit` with each IPv4 connection the kernel tracks (see streamEntries): its tuples. */
export function eachConnection(visit: (c: Connection) => void, replyDestination?: string): Promise<void> {
  return streamEntries(replyDestination, (payload) => {
    const c = connection(payload, 0, payload.length);
    if (c) visit(c);
  });
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(errno);
  } catch {
    return String(errno);
  }
}
