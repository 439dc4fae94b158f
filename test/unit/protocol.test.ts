import t from 'tap';
import { randomBytes } from 'node:crypto';
import { decode, encode, Flag, MAX_SIZE, type Heartbeat } from '../../src/cluster/protocol.js';
import { rng } from '../helpers.js';

const key = Buffer.alloc(32, 7);
const hb: Heartbeat = {
  cluster: 'lab',
  node: 'worker1',
  flags: Flag.READY | Flag.DRAINING,
  incarnation: 1763700000000000n,
  seq: 42n,
  digest: 'ab'.repeat(32),
  claims: ['192.168.1.100', '192.168.1.101'],
};

t.test('round trip', async (t) => {
  const wire = encode(hb, key);
  t.equal(wire.length, 56 + (1 + 3) + (1 + 7) + (1 + 8) + 1 + 32, 'size as documented in docs/protocol.md');
  t.same(decode(wire, key, 'lab'), { ok: true, msg: hb });
  const big = {
    ...hb,
    cluster: 'c'.repeat(255),
    node: 'n'.repeat(255),
    claims: Array.from({ length: 255 }, (_, i) => `10.0.${i}.1`),
  };
  const bigWire = encode(big, key);
  t.ok(bigWire.length <= MAX_SIZE, `the largest message (${bigWire.length} bytes) fits MAX_SIZE`);
  t.same(decode(bigWire, key, big.cluster), { ok: true, msg: big });
});

t.test(
  'the bytes on the wire are the documented ones (written into one buffer, as by the first encoder)',
  async (t) => {
    const wire = encode({ ...hb, node: 'h1', incarnation: 1700000000123456n }, key);
    t.equal(
      wire.toString('hex'),
      '454e41540103000000060a2418202240000000000000002a' + // magic, version, flags, reserved, incarnation, seq
        'ab'.repeat(32) + // config digest
        '036c6162' +
        '026831' + // cluster "lab", node "h1"
        '02c0a80164c0a80165' + // two IPv4 claims
        '00' + // no IPv6 claims
        '2d8f51d267ee7083e4ccbd66ec8fd51edcbff4cee60938fb89a80586db0b2274', // HMAC-SHA256
    );
  },
);

t.test('every drop reason', async (t) => {
  const wire = encode(hb, key);
  const reason = (b: Buffer, k = key, cluster = 'lab') => {
    const d = decode(b, k, cluster);
    return d.ok ? 'accepted' : d.reason;
  };
  t.equal(reason(Buffer.alloc(0)), 'truncated');
  t.equal(reason(wire.subarray(0, 60)), 'truncated');
  t.equal(reason(Buffer.alloc(MAX_SIZE + 1)), 'oversized');
  t.equal(reason(Buffer.from('GET / HTTP/1.1\r\n\r\n')), 'bad-magic');
  const v2 = Buffer.from(wire);
  v2[4] = 2;
  t.equal(reason(v2), 'bad-version');
  t.equal(reason(wire, Buffer.alloc(32, 8)), 'bad-mac', 'another key');
  const flipped = Buffer.from(wire);
  flipped[20]! ^= 1;
  t.equal(reason(flipped), 'bad-mac', 'a changed sequence number');
  t.equal(reason(wire, key, 'prod'), 'other-cluster');
  t.equal(reason(wire.subarray(0, wire.length - 1)), 'malformed', 'a byte short');
  t.equal(reason(Buffer.concat([wire, Buffer.alloc(1)])), 'malformed', 'a byte long');
  const flags = Buffer.from(wire);
  flags[5] = 0x80;
  t.equal(reason(flags), 'malformed', 'unknown flag bits');
  const dup = encode({ ...hb, claims: ['10.0.0.1', '10.0.0.1'] }, key);
  t.equal(reason(dup), 'malformed', 'a claim listed twice');
});

t.test('several keys (a rotation): a heartbeat signed with any of them is accepted, nothing else', async (t) => {
  const old = Buffer.alloc(32, 7);
  const fresh = Buffer.alloc(48, 9);
  const reason = (b: Buffer, keys: Buffer[]) => {
    const d = decode(b, keys, 'lab');
    return d.ok ? 'accepted' : d.reason;
  };
  t.equal(reason(encode(hb, old), [old, fresh]), 'accepted', 'signed with the first');
  t.equal(reason(encode(hb, fresh), [old, fresh]), 'accepted', 'signed with the second');
  t.equal(reason(encode(hb, fresh), [fresh, old]), 'accepted', 'the order does not matter for verifying');
  t.equal(reason(encode(hb, fresh), [old]), 'bad-mac', 'a key the receiver does not list');
  t.equal(reason(encode(hb, Buffer.alloc(32, 1)), [old, fresh]), 'bad-mac', 'a third key');
  t.equal(reason(encode(hb, old), []), 'bad-mac', 'no key verifies nothing');
});

t.test('encode refuses what it cannot carry', async (t) => {
  t.throws(() => encode({ ...hb, node: '' }, key), /node name/);
  t.throws(() => encode({ ...hb, cluster: 'x'.repeat(256) }, key), /cluster name/);
  t.throws(() => encode({ ...hb, claims: ['fe80::1'] }, key), /not an IPv4/);
});

t.test('fuzz: 10^6 random and mutated datagrams never throw and are never accepted', async (t) => {
  const rand = rng(76);
  const valid = [encode(hb, key), encode({ ...hb, claims: [] }, key), encode({ ...hb, node: 'x', flags: 0 }, key)];
  // Verified under a key ring, as during a rotation: a mutation must fail every key.
  const keys = [Buffer.alloc(48, 3), key];
  const counts = new Map<string, number>();
  let accepted = 0;
  const N = 1_000_000;
  const pool = randomBytes(4096);
  for (let i = 0; i < N; i++) {
    let b: Buffer;
    const kind = i % 4;
    if (kind === 0) {
      const len = Math.floor(rand() * 300);
      const off = Math.floor(rand() * (pool.length - len));
      b = Buffer.from(pool.subarray(off, off + len));
      if (rand() < 0.5 && b.length >= 5) {
        b.writeUInt32BE(0x454e4154, 0);
        b[4] = 1;
      } // get past the cheap checks
    } else {
      b = Buffer.from(valid[i % valid.length]!);
      const flips = 1 + Math.floor(rand() * 3);
      for (let f = 0; f < flips; f++) b[Math.floor(rand() * b.length)]! ^= 1 << Math.floor(rand() * 8);
      if (kind === 2) b = b.subarray(0, Math.floor(rand() * b.length));
      if (kind === 3) b = Buffer.concat([b, pool.subarray(0, 1 + Math.floor(rand() * 40))]);
    }
    const d = decode(b, keys, 'lab');
    if (d.ok && valid.some((v) => v.equals(b))) {
      counts.set('unchanged', (counts.get('unchanged') ?? 0) + 1);
      continue;
    } // flips that undid each other
    if (d.ok) accepted++;
    else counts.set(d.reason, (counts.get(d.reason) ?? 0) + 1);
  }
  t.equal(accepted, 0, 'no corrupted datagram is accepted');
  t.equal(
    [...counts.values()].reduce((a, b) => a + b, 0),
    N,
    `${N} inputs, each dropped with a reason`,
  );
  for (const r of ['truncated', 'bad-magic', 'malformed', 'bad-mac']) t.ok((counts.get(r) ?? 0) > 0, `reached ${r}`);
});
