import { endianness } from 'node:os';
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
} from './ctnetlink.js';
import netlink from './netlink-lib.js';
import { attr } from './netlink.js';
import { eachAttribute, streamDump } from './netlink-dump.js';

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
 * Streamed (netlink-dump.ts): a big table never holds up the event loop.
 */
export function streamEntries(replyDestination: string | undefined, each: (payload: Buffer) => void): Promise<void> {
  const header = nfgenmsg();
  return streamDump(
    {
      what: 'the conntrack table',
      protocol: netlink.Protocol.NETFILTER,
      type: ctType(IPCTNL_MSG_CT_GET),
      payload: replyDestination ? Buffer.concat([header, replyDestinationFilter(replyDestination)]) : header,
      answer: ctType(IPCTNL_MSG_CT_NEW),
    },
    (payload) => each(payload.subarray(header.length)),
  );
}

/** Calls `visit` with each IPv4 connection the kernel tracks (see streamEntries): its tuples. */
export function eachConnection(visit: (c: Connection) => void, replyDestination?: string): Promise<void> {
  return streamEntries(replyDestination, (payload) => {
    const c = connection(payload, 0, payload.length);
    if (c) visit(c);
  });
}
