import netlink from './netlink-lib.js';
import { tuple, type Tuple } from './conntrack-dump.js';
import {
  be32,
  CTA,
  CTA_IP,
  CTA_PROTO,
  CTA_TUPLE,
  IPS_ASSURED,
  IPS_CONFIRMED,
  IPS_DST_NAT,
  IPS_SEEN_REPLY,
  NLA_F_NESTED,
} from './ctnetlink.js';
import { attr } from './netlink.js';

// One conntrack entry as connection sync sees it: a connection SNATed to a floating IP,
// read from a ctnetlink message (event or dump) and written back as an IPCTNL_MSG_CT_NEW
// request on another host. Parsing never throws: a message it cannot read is skipped.

const CTA_PROTOINFO_TCP = 1;
const CTA_PROTOINFO_TCP_STATE = 1;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY = 5;
const CTA_NAT_V4_MINIP = 1;
const CTA_NAT_V4_MAXIP = 2;
const CTA_NAT_PROTO = 3;
const CTA_PROTONAT_PORT_MIN = 1;
const CTA_PROTONAT_PORT_MAX = 2;

/** The window of a synced TCP entry is not tracked (it starts mid-stream on the new owner), as conntrackd does. */
const IP_CT_TCP_FLAG_BE_LIBERAL = 0x08;

export const PROTO_TCP = 6;
export const PROTO_UDP = 17;

/** A connection SNATed to `natIp`: its original tuple, the translated source port, its state. */
export interface SyncedEntry {
  readonly proto: number;
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  /** The floating IP and port the far side sees. */
  readonly natIp: string;
  readonly natPort: number;
  /** SEEN_REPLY and ASSURED only. */
  readonly status: number;
  /** Seconds left, as the kernel said when it reported the entry. */
  readonly timeout: number;
  /** TCP conntrack state (enum tcp_conntrack; 3 = ESTABLISHED); 0 for UDP. */
  readonly tcpState: number;
}

/** The identity of an entry: its original tuple. */
export const entryKey = (e: Pick<SyncedEntry, 'proto' | 'src' | 'dst' | 'sport' | 'dport'>): string =>
  `${e.proto} ${e.src}:${e.sport} ${e.dst}:${e.dport}`;

const be16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
};
const ip4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));
const nest = (type: number, ...children: Buffer[]): Buffer => attr(type | NLA_F_NESTED, Buffer.concat(children));

/** What a ctnetlink entry message (after its nfgenmsg header) says, or undefined. */
export interface RawEntry {
  readonly orig: Tuple;
  readonly reply: Tuple;
  readonly status: number;
  readonly timeout: number;
  readonly tcpState: number;
  readonly mark: number;
}

export function parseEntry(payload: Buffer): RawEntry | undefined {
  let orig: Tuple | undefined;
  let reply: Tuple | undefined;
  let status = 0;
  let timeout = 0;
  let tcpState = 0;
  let mark = 0;
  try {
    netlink.parseAttributes(payload, (a) => {
      if (a.type === CTA.TUPLE_ORIG) orig = tuple(a.data);
      else if (a.type === CTA.TUPLE_REPLY) reply = tuple(a.data);
      else if (a.type === CTA.STATUS && a.data.length >= 4) status = a.data.readUInt32BE(0);
      else if (a.type === CTA.TIMEOUT && a.data.length >= 4) timeout = a.data.readUInt32BE(0);
      else if (a.type === CTA.MARK && a.data.length >= 4) mark = a.data.readUInt32BE(0);
      else if (a.type === CTA.PROTOINFO)
        netlink.parseAttributes(a.data, (p) => {
          if (p.type === CTA_PROTOINFO_TCP)
            netlink.parseAttributes(p.data, (t) => {
              if (t.type === CTA_PROTOINFO_TCP_STATE && t.data.length >= 1) tcpState = t.data[0]!;
            });
        });
    });
  } catch {
    return undefined;
  }
  return orig && reply ? { orig, reply, status, timeout, tcpState, mark } : undefined;
}

/**
 * The entry to sync if `e` is a TCP or UDP connection SNATed (and only SNATed) to one of
 * `ips`: its reply goes to the floating IP, from where the original went.
 */
export function snatEntry(e: RawEntry, ips: ReadonlySet<string>): SyncedEntry | undefined {
  const { orig, reply } = e;
  if (orig.proto !== PROTO_TCP && orig.proto !== PROTO_UDP) return undefined;
  if (!ips.has(reply.dst) || orig.src === reply.dst) return undefined;
  if (reply.src !== orig.dst || reply.sport !== orig.dport || e.status & IPS_DST_NAT) return undefined;
  return {
    proto: orig.proto,
    src: orig.src,
    dst: orig.dst,
    sport: orig.sport,
    dport: orig.dport,
    natIp: reply.dst,
    natPort: reply.dport,
    status: e.status & (IPS_SEEN_REPLY | IPS_ASSURED),
    timeout: e.timeout,
    tcpState: orig.proto === PROTO_TCP ? e.tcpState : 0,
  };
}

const tupleAttr = (type: number, proto: number, src: string, dst: string, sport: number, dport: number): Buffer =>
  nest(
    type,
    nest(CTA_TUPLE.IP, attr(CTA_IP.V4_SRC, ip4(src)), attr(CTA_IP.V4_DST, ip4(dst))),
    nest(
      CTA_TUPLE.PROTO,
      attr(CTA_PROTO.NUM, Buffer.from([proto])),
      attr(CTA_PROTO.SRC_PORT, be16(sport)),
      attr(CTA_PROTO.DST_PORT, be16(dport)),
    ),
  );

/** The original tuple of `e`: what names an entry in an IPCTNL_MSG_CT_DELETE. */
export const origTupleAttribute = (e: SyncedEntry): Buffer =>
  tupleAttr(CTA.TUPLE_ORIG, e.proto, e.src, e.dst, e.sport, e.dport);

/**
 * The attributes of an IPCTNL_MSG_CT_NEW that recreates `e`. The reply tuple is given
 * untranslated and CTA.NAT_SRC asks for the floating IP and port: the kernel then does the
 * NAT set-up itself (the SRC_NAT bits, the translated reply tuple). Given the translated
 * reply tuple instead, it would see nothing to translate and the answers would not be
 * de-NATed (tried on the lab: they reached the new owner's own stack, which reset them).
 * No mark: the flush of a taken IP's connections (by mark) leaves synced entries alone.
 */
/** The attributes built one by one (what the template is made from; the tests compare the two). */
export function buildAttributes(e: SyncedEntry): Buffer {
  const parts = [
    origTupleAttribute(e),
    tupleAttr(CTA.TUPLE_REPLY, e.proto, e.dst, e.src, e.dport, e.sport),
    attr(CTA.STATUS, be32((e.status & (IPS_SEEN_REPLY | IPS_ASSURED)) | IPS_CONFIRMED)),
    attr(CTA.TIMEOUT, be32(Math.max(1, e.timeout))),
    nest(
      CTA.NAT_SRC,
      attr(CTA_NAT_V4_MINIP, ip4(e.natIp)),
      attr(CTA_NAT_V4_MAXIP, ip4(e.natIp)),
      nest(CTA_NAT_PROTO, attr(CTA_PROTONAT_PORT_MIN, be16(e.natPort)), attr(CTA_PROTONAT_PORT_MAX, be16(e.natPort))),
    ),
  ];
  if (e.proto === PROTO_TCP) {
    const liberal = Buffer.from([IP_CT_TCP_FLAG_BE_LIBERAL, IP_CT_TCP_FLAG_BE_LIBERAL]);
    parts.push(
      nest(
        CTA.PROTOINFO,
        nest(
          CTA_PROTOINFO_TCP,
          attr(CTA_PROTOINFO_TCP_STATE, Buffer.from([e.tcpState])),
          attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, liberal),
          attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, liberal),
        ),
      ),
    );
  }
  return Buffer.concat(parts);
}

/**
 * Where each field sits in the attributes of one protocol: built once from an entry whose
 * fields hold values found nowhere else in the message, then copied and patched per entry
 * (building every attribute anew cost 11 µs an entry: a second for 100,000, all of it
 * before the announcement).
 */
interface Template {
  readonly bytes: Buffer;
  readonly at: Readonly<Record<'src' | 'dst' | 'nat' | 'sport' | 'dport' | 'natPort', readonly number[]>>;
  readonly status: number;
  readonly timeout: number;
  readonly tcpState?: number;
}

const SENTINEL: SyncedEntry = {
  proto: 0,
  src: '10.251.252.253',
  dst: '10.241.242.243',
  natIp: '10.231.232.233',
  sport: 0xa1b2,
  dport: 0xc3d4,
  natPort: 0xe5f6,
  status: IPS_SEEN_REPLY | IPS_ASSURED,
  timeout: 0x5a5b5c5d,
  tcpState: 7,
};

function offsets(bytes: Buffer, pattern: Buffer, shift = 0): number[] {
  const out: number[] = [];
  for (let i = bytes.indexOf(pattern); i >= 0; i = bytes.indexOf(pattern, i + 1)) out.push(i + shift);
  return out;
}

function template(proto: number): Template {
  const bytes = buildAttributes({ ...SENTINEL, proto });
  const port = (p: number) => offsets(bytes, be16(p));
  const one = (xs: number[]): number => {
    if (xs.length !== 1) throw new Error(`conntrack insert template: ${xs.length} places for one field`);
    return xs[0]!;
  };
  return {
    bytes,
    at: {
      src: offsets(bytes, ip4(SENTINEL.src)),
      dst: offsets(bytes, ip4(SENTINEL.dst)),
      nat: offsets(bytes, ip4(SENTINEL.natIp)),
      sport: port(SENTINEL.sport),
      dport: port(SENTINEL.dport),
      natPort: port(SENTINEL.natPort),
    },
    // CTA_STATUS's header (length 8, type 3), then its value.
    status: one(offsets(bytes, Buffer.from([8, 0, CTA.STATUS, 0]), 4)),
    timeout: one(offsets(bytes, be32(SENTINEL.timeout))),
    ...(proto === PROTO_TCP
      ? { tcpState: one(offsets(bytes, Buffer.from([5, 0, CTA_PROTOINFO_TCP_STATE, 0, 7]), 4)) }
      : {}),
  };
}

const templates = new Map<number, Template>();

export function insertAttributes(e: SyncedEntry): Buffer {
  let t = templates.get(e.proto);
  if (!t) templates.set(e.proto, (t = template(e.proto)));
  const b = Buffer.from(t.bytes);
  const put = (at: readonly number[], value: Buffer) => {
    for (const i of at) value.copy(b, i);
  };
  put(t.at.src, ip4(e.src));
  put(t.at.dst, ip4(e.dst));
  put(t.at.nat, ip4(e.natIp));
  for (const i of t.at.sport) b.writeUInt16BE(e.sport, i);
  for (const i of t.at.dport) b.writeUInt16BE(e.dport, i);
  for (const i of t.at.natPort) b.writeUInt16BE(e.natPort, i);
  b.writeUInt32BE(((e.status & (IPS_SEEN_REPLY | IPS_ASSURED)) | IPS_CONFIRMED) >>> 0, t.status);
  b.writeUInt32BE(Math.max(1, e.timeout) >>> 0, t.timeout);
  if (t.tcpState !== undefined) b[t.tcpState] = e.tcpState;
  return b;
}
