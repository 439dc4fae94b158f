import { createHmac, timingSafeEqual } from 'node:crypto';

// The heartbeat wire format (docs/protocol.md). Encoding and decoding are pure; the
// decoder never throws: every input ends as a message or as a drop reason.

export const MAGIC = 0x454e4154; // "ENAT"
export const VERSION = 1;
export const MAC_SIZE = 32;
const FIXED_SIZE = 4 + 1 + 1 + 2 + 8 + 8 + 32; // magic, version, flags, reserved, incarnation, seq, digest
/** Smallest well-formed message: fixed part, two 1-byte names, no claims, the MAC. */
export const MIN_SIZE = FIXED_SIZE + 1 + 1 + 1 + 1 + 1 + MAC_SIZE;
/** Largest message: 255-byte names and 255 IPv4 claims fit; anything bigger is not ours. */
export const MAX_SIZE = 2048;

export const Flag = {
  /** The sender has listened for a full Down interval and may take floating IPs. */
  READY: 1,
  DRAINING: 2,
  NO_CARRIER: 4,
  /** The sender is stopping: treat it as Down now. */
  LEAVING: 8,
} as const;
const KNOWN_FLAGS = Flag.READY | Flag.DRAINING | Flag.NO_CARRIER | Flag.LEAVING;

export interface Heartbeat {
  readonly cluster: string;
  readonly node: string;
  readonly flags: number;
  /** Per-start number, larger on every start (microseconds since the epoch). */
  readonly incarnation: bigint;
  /** 1, 2, 3, ... within one incarnation. */
  readonly seq: bigint;
  /** sha256 of the sender's config file, hex. */
  readonly digest: string;
  /** IPv4 floating IPs the sender holds, dotted quads. */
  readonly claims: readonly string[];
}

export type DropReason =
  | 'truncated'
  | 'oversized'
  | 'bad-magic'
  | 'bad-version'
  | 'malformed'
  | 'bad-mac'
  | 'other-cluster'
  | 'unknown-node'
  | 'wrong-source'
  | 'replay';

export const DROP_REASONS: readonly DropReason[] = [
  'truncated',
  'oversized',
  'bad-magic',
  'bad-version',
  'malformed',
  'bad-mac',
  'other-cluster',
  'unknown-node',
  'wrong-source',
  'replay',
];

export type Decoded =
  { readonly ok: true; readonly msg: Heartbeat } | { readonly ok: false; readonly reason: DropReason };

export class EncodeError extends Error {}

export const name = (label: string, s: string): Buffer => {
  const b = Buffer.from(s, 'utf8');
  nameLength(label, s);
  return Buffer.concat([Buffer.from([b.length]), b]);
};

export function ipv4(text: string): Buffer {
  const parts = text.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255))
    throw new EncodeError(`claim ${text} is not an IPv4 address`);
  return Buffer.from(parts);
}

/**
 * The heartbeat as bytes, MAC included. Written into one buffer: a daemon sends one every
 * interval from a loop that is otherwise idle, where every allocation is a cold one.
 */
export function encode(hb: Heartbeat, key: Buffer): Buffer {
  if (hb.claims.length > 255) throw new EncodeError(`a heartbeat carries at most 255 claims, not ${hb.claims.length}`);
  if (!/^[0-9a-f]{64}$/.test(hb.digest)) throw new EncodeError('digest must be 64 hex digits');
  const clusterLength = nameLength('cluster name', hb.cluster);
  const nodeLength = nameLength('node name', hb.node);
  const bodySize = FIXED_SIZE + 1 + clusterLength + 1 + nodeLength + 1 + 4 * hb.claims.length + 1;
  const out = Buffer.alloc(bodySize + MAC_SIZE);
  out.writeUInt32BE(MAGIC, 0);
  out.writeUInt8(VERSION, 4);
  out.writeUInt8(hb.flags & KNOWN_FLAGS, 5);
  out.writeBigUInt64BE(hb.incarnation, 8);
  out.writeBigUInt64BE(hb.seq, 16);
  out.write(hb.digest, 24, 'hex');
  let at = FIXED_SIZE;
  at = out.writeUInt8(clusterLength, at);
  at += out.write(hb.cluster, at, 'utf8');
  at = out.writeUInt8(nodeLength, at);
  at += out.write(hb.node, at, 'utf8');
  at = out.writeUInt8(hb.claims.length, at);
  for (const c of hb.claims) at += ipv4(c).copy(out, at);
  out.writeUInt8(0, at); // IPv6 claims: none in version 1 of the config
  mac(key, out.subarray(0, bodySize)).copy(out, bodySize);
  return out;
}

/**
 * `wire` (a heartbeat from encode) with another sequence number, signed again: the next
 * heartbeat when nothing else in it changed, without building it anew.
 */
export function withSeq(wire: Buffer, seq: bigint, key: Buffer): Buffer {
  const out = Buffer.allocUnsafe(wire.length);
  wire.copy(out);
  out.writeBigUInt64BE(seq, 16);
  const bodySize = out.length - MAC_SIZE;
  mac(key, out.subarray(0, bodySize)).copy(out, bodySize);
  return out;
}

function nameLength(label: string, s: string): number {
  const n = Buffer.byteLength(s, 'utf8');
  if (n < 1 || n > 255) throw new EncodeError(`${label} "${s}" must be 1 to 255 bytes of UTF-8 to fit a heartbeat`);
  return n;
}

/** HMAC-SHA256 of `body` under `key`: what signs a heartbeat (and a connection sync message). */
export const mac = (key: Buffer, body: Buffer): Buffer => createHmac('sha256', key).update(body).digest();

/**
 * Whether `tag` is the MAC of `body` under one of `keys` (a key rotation verifies under
 * several). Each comparison is constant-time; which key matched may show in the timing,
 * which tells an attacker nothing about any key.
 */
export const verified = (keys: readonly Buffer[], body: Buffer, tag: Buffer): boolean =>
  keys.some((k) => timingSafeEqual(mac(k, body), tag));

/** A bounds-checked reader: every read past the end returns undefined instead of throwing. */
export class Reader {
  pos = 0;
  constructor(
    private readonly b: Buffer,
    private readonly end: number,
  ) {}
  u8(): number | undefined {
    return this.pos + 1 <= this.end ? this.b[this.pos++] : undefined;
  }
  bytes(n: number): Buffer | undefined {
    if (this.pos + n > this.end) return undefined;
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  /** A name: a length byte (not 0), then that many bytes of UTF-8. */
  name(): string | undefined {
    const n = this.u8();
    const b = n ? this.bytes(n) : undefined;
    return b && text(b);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
function text(b: Buffer): string | undefined {
  try {
    return utf8.decode(b);
  } catch {
    return undefined;
  }
}

/**
 * Checks a datagram's size, structure, cluster and MAC, in that order (the cheap checks
 * first; nothing is trusted before the MAC). `keys`: the cluster's keys, any of which may
 * have signed it. Node, source and replay checks
 * need membership state: see Membership.receive.
 */
export function decode(buf: Buffer, keys: Buffer | readonly Buffer[], cluster: string): Decoded {
  const drop = (reason: DropReason): Decoded => ({ ok: false, reason });
  if (buf.length > MAX_SIZE) return drop('oversized');
  if (buf.length < 5) return drop('truncated');
  if (buf.readUInt32BE(0) !== MAGIC) return drop('bad-magic');
  if (buf[4] !== VERSION) return drop('bad-version');
  if (buf.length < MIN_SIZE) return drop('truncated');
  const bodyEnd = buf.length - MAC_SIZE;
  const flags = buf[5]!;
  if ((flags & ~KNOWN_FLAGS) !== 0 || buf.readUInt16BE(6) !== 0) return drop('malformed');
  const r = new Reader(buf, bodyEnd);
  r.pos = FIXED_SIZE;
  const clusterName = r.name();
  const node = r.name();
  const n4 = r.u8();
  const v4 = n4 === undefined ? undefined : r.bytes(n4 * 4);
  const n6 = r.u8();
  if (clusterName === undefined || node === undefined || v4 === undefined || n6 !== 0 || r.pos !== bodyEnd)
    return drop('malformed');
  // Before the MAC, so that a neighbouring cluster (with its own key) is reported as such.
  if (clusterName !== cluster) return drop('other-cluster');
  if (!verified(Buffer.isBuffer(keys) ? [keys] : keys, buf.subarray(0, bodyEnd), buf.subarray(bodyEnd)))
    return drop('bad-mac');
  const claims: string[] = [];
  for (let i = 0; i < v4.length; i += 4) claims.push(`${v4[i]}.${v4[i + 1]}.${v4[i + 2]}.${v4[i + 3]}`);
  if (new Set(claims).size !== claims.length) return drop('malformed');
  return {
    ok: true,
    msg: {
      cluster: clusterName,
      node,
      flags,
      incarnation: buf.readBigUInt64BE(8),
      seq: buf.readBigUInt64BE(16),
      digest: buf.subarray(24, 56).toString('hex'),
      claims,
    },
  };
}
