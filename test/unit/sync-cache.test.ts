import t from 'tap';
import { EXPIRY_GRACE_MS, SyncCache, SyncOutbox, toRecord } from '../../src/cluster/sync-cache.js';
import type { SyncRecord } from '../../src/cluster/sync-protocol.js';

const IP = '192.168.1.100';
const rec = (sport: number, op: SyncRecord['op'] = 'upsert', timeout = 120): SyncRecord => ({
  op,
  proto: 6,
  src: '10.10.1.2',
  dst: '203.0.113.10',
  sport,
  dport: 9000,
  natPort: sport + 1,
  status: 6,
  tcpState: 3,
  timeout,
});

t.test('upserts, deletes and take', async (t) => {
  const c = new SyncCache();
  c.apply(IP, [rec(1), rec(2), rec(3)], 0, 0);
  c.apply(IP, [rec(2, 'delete'), { ...rec(3), tcpState: 4 }], 0, 10);
  t.same(c.sizes(), { [IP]: 2 });
  const taken = c.take(IP, 20_000);
  t.same(
    taken.map((e) => [e.sport, e.natIp, e.natPort, e.tcpState, e.timeout]),
    [
      [1, IP, 2, 3, 100],
      [3, IP, 4, 4, 101],
    ],
    'the SNAT port, the state, and the timeout left (120 s less the time since each was reported, rounded up)',
  );
  t.same(c.sizes(), {}, 'taken entries are forgotten');
  t.same(c.take(IP, 0), [], 'nothing to take twice');
});

t.test('expiry follows the conntrack timeout plus a grace', async (t) => {
  const c = new SyncCache();
  c.apply(IP, [rec(1, 'upsert', 30), rec(2, 'upsert', 432000)], 0, 0);
  t.equal(c.expire(30_000 + EXPIRY_GRACE_MS - 1), 0);
  t.equal(c.expire(30_000 + EXPIRY_GRACE_MS), 1);
  t.same(c.sizes(), { [IP]: 1 });
  c.apply(IP, [rec(3, 'upsert', 30)], 0, 1_000_000);
  t.equal(c.take(IP, 1_000_000 + 29_000)[1]!.timeout, 1, 'a refreshed entry has what is left');
});

t.test('a complete sweep removes what it did not mention; an incomplete one removes nothing', async (t) => {
  const c = new SyncCache();
  c.apply(IP, [rec(1), rec(2), rec(3)], 0, 0);
  c.apply(IP, [rec(1)], 5, 100);
  c.apply(IP, [rec(4)], 0, 150); // an incremental change during the sweep
  t.notOk(c.endSweep(IP, 5, 2), 'one of two records went missing');
  t.same(c.sizes(), { [IP]: 4 });
  c.apply(IP, [rec(1), rec(2)], 6, 200);
  t.ok(c.endSweep(IP, 6, 2));
  t.same(
    c.take(IP, 300).map((e) => e.sport),
    [1, 2],
    'entries 3 (gone on the owner) and 4 (older than the sweep) are dropped',
  );
});

t.test('drop forgets an IP', async (t) => {
  const c = new SyncCache();
  c.apply(IP, [rec(1)], 1, 0);
  c.drop(IP);
  t.same(c.sizes(), {});
  t.notOk(c.endSweep(IP, 1, 1));
});

t.test('outbox: the newest change of each connection wins', async (t) => {
  const o = new SyncOutbox();
  o.add(IP, rec(1), 5);
  o.add(IP, rec(2), 6);
  o.add(IP, rec(1, 'delete'), 7);
  t.equal(o.size, 2);
  t.equal(o.oldest, 5);
  const out = o.take();
  t.same(
    out.get(IP)!.map((r) => [r.sport, r.op]),
    [
      [1, 'delete'],
      [2, 'upsert'],
    ],
  );
  t.equal(o.size, 0);
  t.equal(o.oldest, undefined);
  t.same(toRecord({ ...rec(9), natIp: IP }, 'delete'), rec(9, 'delete'), 'toRecord keeps every field');
});
