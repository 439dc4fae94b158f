import {
  be32,
  CTA,
  CTA_IP,
  CTA_PROTO,
  CTA_TUPLE,
  ctType,
  IPCTNL_MSG_CT_GET,
  IPCTNL_MSG_CT_NEW,
  IPS_SRC_NAT,
  nfgenmsg,
} from './ctnetlink.js';
import netlink from './netlink-lib.js';
import { attr } from './netlink.js';
import { eachAttribute, streamDump } from './netlink-dump.js';

// Reads the IPv4 conntrack table over ctnetlink (a dump, like `conntrack -L -f ipv4`):
// what SNAT port pressure needs. It walks the whole table, so it runs on demand and on a
// slow timer, never per packet or per scrape; and it streams, so that a big table never
// holds up the event loop.

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
 * network namespace, or those `filter` passes. Callers filter again: an older kernel may
 * ignore the filter.
 *
 * Streamed (netlink-dump.ts): a big table never holds up the event loop.
 */
export function streamEntries(
  each: (payload: Buffer) => void,
  /** Attributes that filter the dump in the kernel (one that ignores them sends every entry). */
  filter?: Buffer,
): Promise<void> {
  const header = nfgenmsg();
  return streamDump(
    {
      what: 'the conntrack table',
      protocol: netlink.Protocol.NETFILTER,
      type: ctType(IPCTNL_MSG_CT_GET),
      payload: filter ? Buffer.concat([header, filter]) : header,
      answer: ctType(IPCTNL_MSG_CT_NEW),
    },
    (payload) => each(payload.subarray(header.length)),
  );
}

/** CTA_STATUS under CTA_STATUS_MASK (big-endian, like the status itself): source-NATed entries only. */
const SNAT_FILTER = Buffer.concat([attr(CTA.STATUS, be32(IPS_SRC_NAT)), attr(CTA.STATUS_MASK, be32(IPS_SRC_NAT))]);

/**
 * Calls `visit` with each source-NATed IPv4 connection the kernel tracks (see
 * streamEntries): its tuples. One walk of the table for all the floating IPs a node holds.
 */
export function eachSnatConnection(visit: (c: Connection) => void): Promise<void> {
  return streamSnatEntries((payload) => {
    const c = connection(payload, 0, payload.length);
    if (c) visit(c);
  });
}

/** streamEntries of the source-NATed entries only, whatever their address (see eachSnatConnection). */
export const streamSnatEntries = (each: (payload: Buffer) => void): Promise<void> => streamEntries(each, SNAT_FILTER);
