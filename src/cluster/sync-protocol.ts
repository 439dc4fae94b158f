import { ipv4, mac, MAC_SIZE, name, Reader, verified } from './protocol.js';

// The connection sync wire format (docs/protocol.md, "Connection sync"): UDP datagrams
// between nodes, signed like heartbeats (HMAC-SHA256 with the cluster key; every key of
// a rotation verifies). Encoding and decoding are pure; the decoder never throws.
//
//   magic "ENCS" u32, version u8, type u8, reserved u16, incarnation u64, seq u64,
//   sweep u32, cluster (u8 length + UTF-8), node (u8 length + UTF-8), floating IP (4 bytes),
//   then by type:
//     entries:  count u16, count × record (22 bytes)
//     sweep-end: total u32 (records the sweep sent)
//     resync:   nothing (a candidate asks the owner for a full sweep)
//   MAC (32 bytes, over everything before it)
//   record: op u8 (1 upsert, 2 delete), proto u8, src 4, dst 4, sport u16, dport u16,
//           SNAT port u16, status u8, TCP state u8, timeout u32 (seconds)

export const SYNC_MAGIC = 0x454e4353; // "ENCS"
export const SYNC_VERSION = 1;
/** Fits an Ethernet MTU with IP and UDP headers. */
export const SYNC_MAX_SIZE = 1472;
const RECORD_SIZE = 22;
const FIXED = 4 + 1 + 1 + 2 + 8 + 8 + 4;
/** Records per datagram with the longest names (255 + 255 bytes) would not fit: names are short in practice; the encoder packs what fits. */
export const recordsThatFit = (cluster: string, node: string): number =>
  Math.floor(
    (SYNC_MAX_SIZE - FIXED - 2 - Buffer.byteLength(cluster) - Buffer.byteLength(node) - 4 - 2 - MAC_SIZE) / RECORD_SIZE,
  );

export type SyncType = 'entries' | 'sweep-end' | 'resync';
const TYPE_CODE: Record<SyncType, number> = { entries: 1, 'sweep-end': 2, resync: 3 };
const CODE_TYPE = new Map(Object.entries(TYPE_CODE).map(([k, v]) => [v, k as SyncType]));

export interface SyncRecord {
  readonly op: 'upsert' | 'delete';
  readonly proto: number;
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  readonly natPort: number;
  readonly status: number;
  readonly tcpState: number;
  readonly timeout: number;
}

export interface SyncMessage {
  readonly type: SyncType;
  readonly cluster: string;
  readonly node: string;
  readonly incarnation: bigint;
  readonly seq: bigint;
  /** The full sweep this message belongs to; 0 for incremental changes. */
  readonly sweep: number;
  readonly ip: string;
  readonly records: readonly SyncRecord[];
  /** sweep-end: how many records the sweep sent. */
  readonly total: number;
}

export type SyncDropReason =
  'truncated' | 'oversized' | 'bad-magic' | 'bad-version' | 'malformed' | 'other-cluster' | 'bad-mac';
export type SyncDecoded = { ok: true; msg: SyncMessage } | { ok: false; reason: SyncDropReason };

function record(r: SyncRecord): Buffer {
  const b = Buffer.alloc(RECORD_SIZE);
  b[0] = r.op === 'upsert' ? 1 : 2;
  b[1] = r.proto;
  ipv4(r.src).copy(b, 2);
  ipv4(r.dst).copy(b, 6);
  b.writeUInt16BE(r.sport, 10);
  b.writeUInt16BE(r.dport, 12);
  b.writeUInt16BE(r.natPort, 14);
  b[16] = r.status & 0xff;
  b[17] = r.tcpState & 0xff;
  b.writeUInt32BE(Math.max(0, Math.min(0xffffffff, Math.round(r.timeout))), 18);
  return b;
}

export function encodeSync(m: SyncMessage, key: Buffer): Buffer {
  const fixed = Buffer.alloc(FIXED);
  fixed.writeUInt32BE(SYNC_MAGIC, 0);
  fixed[4] = SYNC_VERSION;
  fixed[5] = TYPE_CODE[m.type];
  fixed.writeBigUInt64BE(m.incarnation, 8);
  fixed.writeBigUInt64BE(m.seq, 16);
  fixed.writeUInt32BE(m.sweep >>> 0, 24);
  const parts = [fixed, name('cluster name', m.cluster), name('node name', m.node), ipv4(m.ip)];
  if (m.type === 'entries') {
    const count = Buffer.alloc(2);
    count.writeUInt16BE(m.records.length);
    parts.push(count, ...m.records.map(record));
  } else if (m.type === 'sweep-end') {
    const total = Buffer.alloc(4);
    total.writeUInt32BE(m.total >>> 0);
    parts.push(total);
  }
  const body = Buffer.concat(parts);
  return Buffer.concat([body, mac(key, body)]);
}

const dotted = (b: Buffer): string => `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;

function readRecord(b: Buffer): SyncRecord | undefined {
  if (b[0] !== 1 && b[0] !== 2) return undefined;
  return {
    op: b[0] === 1 ? 'upsert' : 'delete',
    proto: b[1]!,
    src: dotted(b.subarray(2, 6)),
    dst: dotted(b.subarray(6, 10)),
    sport: b.readUInt16BE(10),
    dport: b.readUInt16BE(12),
    natPort: b.readUInt16BE(14),
    status: b[16]!,
    tcpState: b[17]!,
    timeout: b.readUInt32BE(18),
  };
}

/** Checks size, structure, cluster and MAC (nothing is trusted before it); node, source and replay need the caller's state. */
export function decodeSync(buf: Buffer, keys: readonly Buffer[], cluster: string): SyncDecoded {
  const drop = (reason: SyncDropReason): SyncDecoded => ({ ok: false, reason });
  if (buf.length > SYNC_MAX_SIZE) return drop('oversized');
  if (buf.length < 6) return drop('truncated');
  if (buf.readUInt32BE(0) !== SYNC_MAGIC) return drop('bad-magic');
  if (buf[4] !== SYNC_VERSION) return drop('bad-version');
  if (buf.length < FIXED + 2 + 2 + 4 + MAC_SIZE) return drop('truncated');
  const type = CODE_TYPE.get(buf[5]!);
  if (!type || buf.readUInt16BE(6) !== 0) return drop('malformed');
  const end = buf.length - MAC_SIZE;
  const r = new Reader(buf, end);
  r.pos = FIXED;
  const clusterName = r.name();
  const node = r.name();
  const ip = r.bytes(4);
  if (clusterName === undefined || node === undefined || !ip) return drop('malformed');
  const records: SyncRecord[] = [];
  let total = 0;
  if (type === 'entries') {
    const hi = r.u8();
    const lo = r.u8();
    const count = hi === undefined || lo === undefined ? undefined : (hi << 8) | lo;
    for (let i = 0; count !== undefined && i < count; i++) {
      const b = r.bytes(RECORD_SIZE);
      const rec = b && readRecord(b);
      if (!rec) return drop('malformed');
      records.push(rec);
    }
    if (count === undefined) return drop('malformed');
  } else if (type === 'sweep-end') {
    const b = r.bytes(4);
    if (!b) return drop('malformed');
    total = b.readUInt32BE(0);
  }
  if (r.pos !== end) return drop('malformed');
  if (clusterName !== cluster) return drop('other-cluster');
  if (!verified(keys, buf.subarray(0, end), buf.subarray(end))) return drop('bad-mac');
  return {
    ok: true,
    msg: {
      type,
      cluster: clusterName,
      node,
      incarnation: buf.readBigUInt64BE(8),
      seq: buf.readBigUInt64BE(16),
      sweep: buf.readUInt32BE(24),
      ip: dotted(ip),
      records,
      total,
    },
  };
}
