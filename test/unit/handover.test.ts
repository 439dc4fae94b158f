import t from 'tap';
import { handover, type HandoverInput } from '../../src/cluster/handover.js';
import type { Election, Reason } from '../../src/cluster/ownership.js';

// The handover rules (docs/design.md, "Handover rules") as a pure function.

const A = '192.168.1.100';
const B = '192.168.1.101';
const election = (owners: Record<string, string>, reasons: Record<string, Reason> = {}): Election => ({
  owners: new Map(Object.entries(owners)),
  reasons: new Map(Object.keys(owners).map((ip) => [ip, reasons[ip] ?? 'kept'])),
});
const input = (over: Partial<HandoverInput>): HandoverInput => ({
  self: 'n1',
  election: election({}),
  held: new Set(),
  ready: true,
  handingOver: false,
  peerClaims: [],
  handoverSince: new Map(),
  contested: new Set(),
  now: 1000,
  holdLimitMs: 300,
  ...over,
});

t.test('a ready node holds what it is elected for and announces what it takes', async (t) => {
  const h = handover(input({ election: election({ [A]: 'n1', [B]: 'n2' }, { [A]: 'assigned' }), held: new Set([B]) }));
  t.same([...h.hold], [[A, 'elected']]);
  t.same([...h.take], [A]);
  t.same([...h.announce], [A]);
  t.same([...h.release], [[B, 'not-elected']], 'B goes at once: this node is not handing over');
  t.same(
    [...h.owners],
    [
      [A, 'n1'],
      [B, 'n2'],
    ],
  );
  t.equal(h.wakeAt, undefined);
});

t.test('the joining gate: a node still listening takes nothing new, keeps what it holds', async (t) => {
  const h = handover(input({ ready: false, election: election({ [A]: 'n1', [B]: 'n1' }), held: new Set([B]) }));
  t.same([...h.hold], [[B, 'elected']]);
  t.same([...h.release], [[A, 'joining']]);
  t.same([...h.owners], [[B, 'n1']], 'the data plane treats A as unowned until the node is ready');
  t.same([...h.take], []);
});

t.test('make-before-break: a node handing over keeps the IP until the new owner claims it', async (t) => {
  const base = input({ handingOver: true, election: election({ [A]: 'n2' }), held: new Set([A]) });
  const first = handover(base);
  t.same([...first.hold], [[A, 'make-before-break']]);
  t.same([...first.owners], [[A, 'n1']], 'still routed and SNATed here');
  t.equal(first.wakeAt, 1300, 'decide again when the hold runs out');
  const later = handover({ ...base, now: 1200, handoverSince: first.handoverSince });
  t.same([...later.hold], [[A, 'make-before-break']], 'the hold keeps its start time');
  t.equal(later.wakeAt, 1300);
  const claimed = handover({
    ...base,
    now: 1210,
    handoverSince: later.handoverSince,
    peerClaims: [{ ip: A, node: 'n2' }],
  });
  t.same([...claimed.hold], [], 'released once n2 claims it');
  t.same([...claimed.release], [[A, 'handed-over']]);
  t.same([...claimed.handoverSince], []);
  const expired = handover({ ...base, now: 1300, handoverSince: later.handoverSince });
  t.same([...expired.release], [[A, 'handed-over']], 'bounded by one Down interval');
  const otherClaims = handover({ ...base, peerClaims: [{ ip: A, node: 'n3' }] });
  t.same([...otherClaims.hold], [[A, 'make-before-break']], "only the new owner's claim ends the hold");
});

t.test('no make-before-break towards nobody, or when not handing over', async (t) => {
  const none = handover(input({ handingOver: true, election: election({}), held: new Set([A]) }));
  t.same([...none.release], [[A, 'not-elected']], 'no candidate: nothing to wait for');
  const lost = handover(input({ handingOver: false, election: election({ [A]: 'n2' }), held: new Set([A]) }));
  t.same([...lost.release], [[A, 'not-elected']], 'an IP lost to a conflict or a better claim goes at once');
});

t.test('a conflict won is announced again, once per conflict', async (t) => {
  const won = election({ [A]: 'n1' }, { [A]: 'conflict' });
  const first = handover(input({ election: won, held: new Set([A]) }));
  t.same([...first.reannounce], [A]);
  t.same([...first.announce], [A]);
  t.same([...first.take], [], 'already held: nothing to add');
  const again = handover(input({ election: won, held: new Set([A]), contested: first.contested }));
  t.same([...again.announce], [], 'not again while the same conflict lasts');
  const over = handover(input({ election: election({ [A]: 'n1' }), held: new Set([A]), contested: again.contested }));
  t.same([...over.contested], []);
  const anew = handover(input({ election: won, held: new Set([A]), contested: over.contested }));
  t.same([...anew.reannounce], [A], 'a new conflict is announced again');
  const lostIt = handover(input({ election: election({ [A]: 'n2' }, { [A]: 'conflict' }), held: new Set([A]) }));
  t.same([...lostIt.reannounce], [], 'the loser does not announce');
});

t.test('outvoted by peers that fail authentication: takes nothing new, keeps what it holds', async (t) => {
  const h = handover(
    input({
      election: election({ [A]: 'n1', [B]: 'n1' }),
      held: new Set([B]),
      unverified: { outvoted: true, held: new Map() },
    }),
  );
  t.same([...h.hold], [[B, 'elected']]);
  t.same([...h.release], [[A, 'outvoted']]);
  t.same([...h.take], []);
  t.same([...h.owners], [[B, 'n1']], 'A is unowned for this node: its key is probably the wrong one');
});

t.test('an IP held by a peer that fails authentication is not taken over', async (t) => {
  const unverified = { outvoted: false, held: new Map([[A, 'n3']]) };
  const h = handover(input({ election: election({ [A]: 'n1', [B]: 'n1' }, { [A]: 'assigned' }), unverified }));
  t.same([...h.hold], [[B, 'elected']], 'B is taken as usual');
  t.same([...h.release], [[A, 'held-by-unverified']]);
  t.same([...h.take], [B]);
  t.equal(h.owners.get(A), 'n3', 'the data plane steers A to the host that still holds it');
  const other = handover(input({ election: election({ [A]: 'n2' }), unverified }));
  t.equal(other.owners.get(A), 'n3', 'also when the election gives it to another verified node');
  const claimed = handover(
    input({ election: election({ [A]: 'n2' }), unverified, peerClaims: [{ ip: A, node: 'n2' }] }),
  );
  t.equal(claimed.owners.get(A), 'n2', 'unless that node says it holds it: then the failing peer no longer does');
  const mine = handover(input({ election: election({ [A]: 'n1' }), unverified, held: new Set([A]) }));
  t.same([...mine.hold], [[A, 'elected']], 'what this node holds already, it keeps');
  t.equal(mine.owners.get(A), 'n1');
});

t.test('claimed elsewhere: what this node holds or takes while another node still claims it', async (t) => {
  const taking = handover(
    input({ election: election({ [A]: 'n1', [B]: 'n1' }), peerClaims: [{ ip: A, node: 'n2' }], held: new Set([B]) }),
  );
  t.same([...taking.take], [A], 'n1 takes A, which n2 hands over');
  t.same([...taking.claimedElsewhere], [A], 'while n2 still claims it (make-before-break)');
  const conflict = handover(
    input({
      election: election({ [A]: 'n1' }, { [A]: 'conflict' }),
      peerClaims: [{ ip: A, node: 'n3' }],
      held: new Set([A]),
    }),
  );
  t.same([...conflict.claimedElsewhere], [A], 'a conflict this node wins: the loser still claims it');
  const letGo = handover(input({ election: election({ [A]: 'n1' }), held: new Set([A]) }));
  t.same([...letGo.claimedElsewhere], [], 'nobody else claims it');
  const notOurs = handover(input({ election: election({ [A]: 'n2' }), peerClaims: [{ ip: A, node: 'n2' }] }));
  t.same([...notOurs.claimedElsewhere], [], 'only what this node holds counts');
  const leaving = handover(
    input({ election: election({ [A]: 'n1' }), leavingClaims: [{ ip: A, node: 'n2' }], held: new Set() }),
  );
  t.same([...leaving.claimedElsewhere], [A], 'a node leaving (SIGTERM, Down for the election) still holds it');
});
