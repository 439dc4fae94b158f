import t from 'tap';
import { ClusterNode, type OwnerChange } from '../../src/cluster/node.js';
import { FailoverHistory } from '../../src/daemon/history.js';
import { loadValid } from '../helpers.js';

// The failover history: why each floating IP moved, as the deciding node knew it, and
// the outage the taking node measured (seen Down → gratuitous ARP).

const KEY = [Buffer.alloc(32, 3)];
const IP = '192.168.1.100';
const WALL = Date.UTC(2026, 10, 22, 20, 0, 0);

/** worker1 and worker2 of the valid config, ready; worker2 holds both IPs and worker1 has heard it. */
function pair(): {
  w1: ClusterNode;
  w2: ClusterNode;
  heard: (at: number, flags?: Partial<Record<string, boolean>>) => void;
} {
  const config = loadValid();
  const w1 = new ClusterNode(config, 'worker1', KEY, 1n);
  const w2 = new ClusterNode(config, 'worker2', KEY, 1n);
  w1.setCondition({ listened: true });
  w2.setCondition({ listened: true });
  const d2 = w2.decide(0);
  w2.applied(new Set(d2.hold.keys()), d2);
  const heard = (at: number, cond: Partial<Record<string, boolean>> = {}) => {
    w2.setCondition(cond);
    t.ok(w1.receive(w2.heartbeat(), '192.168.1.2', at).accepted, 'worker1 hears worker2');
  };
  heard(0);
  const d1 = w1.decide(0);
  w1.applied(new Set(d1.hold.keys()), d1);
  return { w1, w2, heard };
}

t.test('an owner that times out: cause owner-down, with the moment worker1 saw it Down', async (t) => {
  const { w1 } = pair();
  t.same(w1.decide(10).ownerChanges, [], 'nothing moves while worker2 is heard');
  const { down } = w1.expire(400);
  t.same(down, ['worker2']);
  const changes = w1.decide(405).ownerChanges;
  t.same(
    changes.map((c) => [c.ip, c.from, c.to, c.cause, c.downAt]),
    [
      ['192.168.1.100', 'worker2', 'worker1', 'owner-down', 400],
      ['192.168.1.101', 'worker2', 'worker1', 'owner-down', 400],
    ],
  );
});

t.test('an owner that drains or says it leaves: owner-draining, owner-left', async (t) => {
  const a = pair();
  a.heard(50, { draining: true });
  t.same(
    a.w1.decide(55).ownerChanges.map((c) => [c.from, c.to, c.cause, c.downAt]),
    [
      ['worker2', 'worker1', 'owner-draining', undefined],
      ['worker2', 'worker1', 'owner-draining', undefined],
    ],
    'a draining owner is alive: no outage starts',
  );
  const b = pair();
  b.heard(60, { leaving: true });
  t.same(
    b.w1.decide(61).ownerChanges.map((c) => [c.cause, c.downAt]),
    [
      ['owner-left', 60],
      ['owner-left', 60],
    ],
  );
});

const change = (c: Partial<OwnerChange>): OwnerChange => ({
  ip: IP,
  from: 'worker2',
  to: 'worker1',
  reason: 'assigned',
  cause: 'owner-down',
  ...c,
});

t.test('history: the taking node completes the outage when its ARP leaves', async (t) => {
  const h = new FailoverHistory(() => 'worker1');
  h.record([change({ downAt: 1000 })], WALL);
  t.same(h.list(), [
    {
      at: '2026-11-22T20:00:00.000Z',
      ip: IP,
      from: 'worker2',
      to: 'worker1',
      reason: 'assigned',
      cause: 'owner-down',
      outageMs: null,
    },
  ]);
  t.equal(h.announced(IP, 1042.4), 42, 'seen Down at 1000, announced at 1042');
  t.equal(h.list()[0]!.outageMs, 42);
  t.equal(h.announced(IP, 2000), undefined, 'a repeated announcement ends no outage');
  t.equal(h.list()[0]!.outageMs, 42);
});

t.test('history: no outage for planned moves, for other takers, or after a newer change', async (t) => {
  const h = new FailoverHistory(() => 'worker1');
  h.record([change({ cause: 'owner-draining' })], WALL);
  t.equal(h.announced(IP, 5), undefined, 'a drain is make-before-break');
  h.record([change({ to: 'cp1', downAt: 1 })], WALL);
  t.equal(h.announced(IP, 5), undefined, 'another node took it');
  h.record([change({ downAt: 10 })], WALL);
  h.record([change({ from: 'worker1', to: 'worker2', cause: 'election' })], WALL);
  t.equal(h.announced(IP, 50), undefined, 'it moved on before the ARP left');
  t.same(
    h.list().map((r) => r.outageMs),
    [null, null, null, null],
  );
});

t.test('history: keeps the last N changes, oldest first', async (t) => {
  const h = new FailoverHistory(() => 'worker1', 3);
  for (let i = 0; i < 5; i++) h.record([change({ ip: `192.168.1.${100 + i}` })], WALL + i);
  t.same(
    h.list().map((r) => r.ip),
    ['192.168.1.102', '192.168.1.103', '192.168.1.104'],
  );
});
