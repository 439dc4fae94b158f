import t from 'tap';
import { Membership } from '../../src/cluster/membership.js';
import { Flag, type Heartbeat } from '../../src/cluster/protocol.js';
import { loadValid } from '../helpers.js';

const hb = (over: Partial<Heartbeat> = {}): Heartbeat => ({
  cluster: 'lab',
  node: 'worker2',
  flags: Flag.READY,
  incarnation: 10n,
  seq: 1n,
  digest: '00'.repeat(32),
  claims: [],
  ...over,
});
const W2 = '192.168.1.2';

t.test('Up while heartbeats arrive, Down after missed intervals', async (t) => {
  const m = new Membership(loadValid(), 'worker1');
  t.equal(m.timeoutMs, 300);
  t.same(m.live(), [], 'nobody is Up before a heartbeat');
  const r = m.receive(hb(), W2, 1000);
  t.ok(r.accepted && r.changed);
  t.same(m.live(), [{ name: 'worker2', eligible: true, mayKeep: false, joining: false }]);
  t.same(m.expire(1299), [], 'still Up just before the timeout');
  t.ok(m.receive(hb({ seq: 2n }), W2, 1250).accepted);
  t.same(m.expire(1549), []);
  t.same(m.expire(1550), ['worker2'], 'Down after 3 × 100 ms of silence');
  t.equal(m.list().find((p) => p.name === 'worker2')!.downReason, 'timeout');
});

t.test('replay, unknown node, wrong source', async (t) => {
  const m = new Membership(loadValid(), 'worker1');
  t.ok(m.receive(hb({ seq: 5n }), W2, 0).accepted);
  t.same(m.receive(hb({ seq: 5n }), W2, 1), { accepted: false, reason: 'replay' }, 'the same message again');
  t.same(m.receive(hb({ seq: 4n }), W2, 1), { accepted: false, reason: 'replay' }, 'an older one');
  t.same(
    m.receive(hb({ incarnation: 9n, seq: 100n }), W2, 1),
    { accepted: false, reason: 'replay' },
    'one from an earlier start',
  );
  t.ok(m.receive(hb({ incarnation: 11n, seq: 1n }), W2, 1).accepted, 'a restart begins a new incarnation');
  t.same(m.receive(hb({ node: 'intruder' }), W2, 1), { accepted: false, reason: 'unknown-node' });
  t.same(
    m.receive(hb({ node: 'worker1', seq: 99n }), '192.168.1.1', 1),
    { accepted: false, reason: 'unknown-node' },
    'our own name from the network',
  );
  t.same(m.receive(hb({ seq: 50n }), '192.168.1.3', 1), { accepted: false, reason: 'wrong-source' });
});

t.test('flags: draining and no carrier are Up but not eligible; leaving is Down at once', async (t) => {
  const m = new Membership(loadValid(), 'worker1');
  m.receive(hb({ flags: Flag.READY | Flag.DRAINING, claims: ['192.168.1.100'] }), W2, 0);
  t.same(m.live(), [{ name: 'worker2', eligible: false, mayKeep: true, joining: false }]);
  t.same(m.claims(), [{ ip: '192.168.1.100', node: 'worker2' }]);
  m.receive(hb({ flags: Flag.READY | Flag.NO_CARRIER, seq: 2n }), W2, 1);
  t.same(m.live(), [{ name: 'worker2', eligible: false, mayKeep: false, joining: false }]);
  m.receive(hb({ flags: 0, seq: 3n }), W2, 2);
  t.same(
    m.live(),
    [{ name: 'worker2', eligible: false, mayKeep: false, joining: true }],
    'not eligible before it is ready, but joining',
  );
  const r = m.receive(hb({ flags: Flag.LEAVING, seq: 4n, claims: ['192.168.1.100'] }), W2, 3);
  t.ok(r.accepted && r.changed);
  t.same(m.live(), [], 'leaving: Down without waiting');
  t.same(m.claims(), [], 'and its claims no longer count');
  t.same(m.leavingClaims(3), [{ ip: '192.168.1.100', node: 'worker2' }], 'for the election; it still holds it');
  m.receive(hb({ flags: Flag.LEAVING, seq: 5n, claims: [] }), W2, 4);
  t.same(m.leavingClaims(4), [], 'until it lets go');
  m.receive(hb({ flags: Flag.LEAVING, seq: 6n, claims: ['192.168.1.100'] }), W2, 5);
  t.same(m.leavingClaims(5 + m.timeoutMs + 1), [], 'or a Down interval passes without a word from it');
  t.equal(m.nextExpiry(), undefined);
});

t.test('a configured peer failing authentication: alive but unverified, while bad MACs keep coming', async (t) => {
  const m = new Membership(loadValid(), 'worker1');
  const failing = () => m.failing().map((p) => p.name);
  t.same(m.authFailed('192.168.1.99', 0), { changed: false }, 'a stranger: no peer');
  t.same(m.authFailed('192.168.1.1', 0), { changed: false }, 'our own address: no peer');
  t.same(m.authFailed(W2, 0), { peer: 'worker2', changed: true }, 'a never-heard peer starts failing');
  t.same(m.authFailed(W2, 100), { peer: 'worker2', changed: false }, 'said once, not per datagram');
  t.same(failing(), ['worker2']);
  t.same(m.live(), [], 'not Up: nothing it says is believed');
  t.same([...m.heldByFailing()], [], 'never verified: it holds nothing we know of');
  t.equal(m.nextExpiry(), 400, 'its failing state times out one Down interval after the last bad MAC');
  t.same(m.expireFailing(399), []);
  t.same(m.expireFailing(400), ['worker2'], 'silent for a Down interval: just Down');
  t.same(failing(), []);
  t.same(m.authFailed(W2, 500), { peer: 'worker2', changed: true }, 'fails again: said again');
  const r = m.receive(hb(), W2, 550);
  t.ok(r.accepted && r.changed, 'verified again (its key was fixed): Up, a change');
  t.same(failing(), []);
});

t.test('an Up peer whose key changes: failing once it times out, and keeps what it held', async (t) => {
  const m = new Membership(loadValid(), 'worker1');
  m.receive(hb({ claims: ['192.168.1.100'] }), W2, 0);
  t.same(m.authFailed(W2, 100), { peer: 'worker2', changed: false }, 'Up: a forgery from its address, it is fine');
  t.same(m.failing(), []);
  m.authFailed(W2, 200);
  t.same(m.expire(300), ['worker2'], 'Down: its heartbeats stopped passing');
  t.same(
    m.failing().map((p) => p.name),
    ['worker2'],
    'and failing: datagrams from it keep failing',
  );
  t.same([...m.heldByFailing()], [['192.168.1.100', 'worker2']], 'what it held stays its own');
  m.expireFailing(500);
  t.same([...m.heldByFailing()], [], 'silent: it is just Down, and its IPs may be taken over');
  m.authFailed(W2, 600);
  t.same([...m.heldByFailing()], [], 'failing again later: what it held then was taken over already');
});

t.test('a peer that crashed and restarted with another key: its old claims do not count', async (t) => {
  const m = new Membership(loadValid(), 'worker1');
  m.receive(hb({ claims: ['192.168.1.100'] }), W2, 0);
  t.same(m.expire(300), ['worker2']);
  t.same(m.failing(), [], 'no bad MAC: an ordinary timeout');
  m.authFailed(W2, 400);
  t.same([...m.heldByFailing()], [], 'its IPs were taken over when it went Down');
});
