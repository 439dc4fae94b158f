import t from 'tap';
import {
  decodeSync,
  encodeSync,
  recordsThatFit,
  SYNC_MAX_SIZE,
  type SyncMessage,
} from '../../src/cluster/sync-protocol.js';
import { rng } from '../helpers.js';

const key = Buffer.alloc(32, 7);
const record = (i: number) => ({
  op: i % 5 === 0 ? ('delete' as const) : ('upsert' as const),
  proto: i % 2 ? 6 : 17,
  src: `10.10.${i % 256}.2`,
  dst: '203.0.113.10',
  sport: 30000 + i,
  dport: 443,
  natPort: 40000 + i,
  status: 6,
  tcpState: 3,
  timeout: 432000,
});
const msg: SyncMessage = {
  type: 'entries',
  cluster: 'lab',
  node: 'worker1',
  incarnation: 1763700000000000n,
  seq: 7n,
  sweep: 3,
  ip: '192.168.1.100',
  records: [record(1), record(5)],
  total: 0,
};

t.test('round trip of every type', async (t) => {
  t.same(decodeSync(encodeSync(msg, key), [key], 'lab'), { ok: true, msg });
  const end = { ...msg, type: 'sweep-end' as const, records: [], total: 1234 };
  t.same(decodeSync(encodeSync(end, key), [key], 'lab'), { ok: true, msg: end });
  const resync = { ...msg, type: 'resync' as const, records: [], sweep: 0 };
  t.same(decodeSync(encodeSync(resync, key), [key], 'lab'), { ok: true, msg: resync });
});

t.test('a full datagram fits an Ethernet MTU', async (t) => {
  const n = recordsThatFit(msg.cluster, msg.node);
  t.ok(n >= 60, `${n} records per datagram`);
  const full = { ...msg, records: Array.from({ length: n }, (_, i) => record(i)) };
  const wire = encodeSync(full, key);
  t.ok(wire.length <= SYNC_MAX_SIZE, `${wire.length} bytes`);
  t.same(decodeSync(wire, [key], 'lab'), { ok: true, msg: full });
});

t.test('key rotation: any key of the file verifies', async (t) => {
  const other = Buffer.alloc(32, 9);
  const wire = encodeSync(msg, other);
  t.ok(decodeSync(wire, [key, other], 'lab').ok);
  t.same(decodeSync(wire, [key], 'lab'), { ok: false, reason: 'bad-mac' });
});

t.test('drop reasons', async (t) => {
  const wire = encodeSync(msg, key);
  const reason = (b: Buffer, cluster = 'lab') => {
    const d = decodeSync(b, [key], cluster);
    return d.ok ? 'accepted' : d.reason;
  };
  t.equal(reason(Buffer.alloc(0)), 'truncated');
  t.equal(reason(Buffer.alloc(SYNC_MAX_SIZE + 1)), 'oversized');
  t.equal(
    reason(Buffer.from('ENATxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx')),
    'bad-magic',
  );
  const v = Buffer.from(wire);
  v[4] = 2;
  t.equal(reason(v), 'bad-version');
  const ty = Buffer.from(wire);
  ty[5] = 9;
  t.equal(reason(ty), 'malformed');
  t.equal(reason(wire, 'other'), 'other-cluster');
  const flipped = Buffer.from(wire);
  flipped[60] = (flipped[60] ?? 0) ^ 1;
  t.equal(reason(flipped), 'bad-mac');
  t.equal(reason(wire.subarray(0, wire.length - 1)), 'malformed', 'one byte short');
});

t.test('random and mutated input never throws', async (t) => {
  const next = rng(11);
  const wire = encodeSync({ ...msg, records: Array.from({ length: 20 }, (_, i) => record(i)) }, key);
  let accepted = 0;
  for (let i = 0; i < 5000; i++) {
    const b =
      i % 2
        ? Buffer.from(Array.from({ length: Math.floor(next() * 300) }, () => Math.floor(next() * 256)))
        : Buffer.from(wire);
    if (!(i % 2)) for (let j = 0; j < 3; j++) b[Math.floor(next() * b.length)] = Math.floor(next() * 256);
    if (decodeSync(b, [key], 'lab').ok) accepted++;
  }
  t.equal(accepted, 0, 'nothing unsigned is accepted');
});
