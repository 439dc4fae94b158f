import t from 'tap';
import { ClusterNode } from '../../src/cluster/node.js';
import { decode, encode, Flag, withSeq } from '../../src/cluster/protocol.js';
import { loadValid, validText } from '../helpers.js';

// What a node sends: each heartbeat is exactly what encode() makes of the node's state at
// that moment, although most are the last one re-signed with the next sequence number
// (protocol.ts withSeq): a change of flags, claims, config or key is in the very next one.

const KEY = Buffer.alloc(32, 3);
const NEW_KEY = Buffer.alloc(32, 9);

t.test('withSeq is encode with another sequence number', async (t) => {
  const hb = {
    cluster: 'lab',
    node: 'h1',
    flags: Flag.READY,
    incarnation: 5n,
    seq: 1n,
    digest: 'cd'.repeat(32),
    claims: ['192.168.1.100'],
  };
  const first = encode(hb, KEY);
  t.same(withSeq(first, 2n, KEY), encode({ ...hb, seq: 2n }, KEY));
  t.same(first, encode(hb, KEY), 'the heartbeat it started from is left as it was (it may still be queued)');
});

t.test("a node's heartbeats follow its state, one by one", async (t) => {
  const config = loadValid();
  const node = new ClusterNode(config, 'worker2', [KEY], 7n);
  let seq = 0n;
  const expect = (what: string, flags: number, claims: string[], key = KEY, digest = config.digest) => {
    seq++;
    const wire = node.heartbeat();
    const hb = { cluster: config.cluster.name, node: 'worker2', flags, incarnation: 7n, seq, digest, claims };
    t.same(wire, encode(hb, key), `${what}: heartbeat ${seq} as encode() makes it`);
    t.same(decode(wire, [key], config.cluster.name), { ok: true, msg: hb }, `${what}: it decodes`);
  };
  expect('listening', 0, []);
  expect('still listening', 0, []);
  node.setCondition({ listened: true });
  expect('ready', Flag.READY, []);
  const d = node.decide(0);
  const held = [...d.hold.keys()].sort();
  t.ok(held.length > 0, 'worker2 takes IPs');
  node.applied(new Set(held), d);
  expect('holding', Flag.READY, held);
  expect('still holding', Flag.READY, held);
  node.setCondition({ draining: true });
  expect('draining', Flag.READY | Flag.DRAINING, held);
  node.reconfigure(config, [NEW_KEY, KEY]);
  expect('a new key signs', Flag.READY | Flag.DRAINING, held, NEW_KEY);
  expect('and goes on signing', Flag.READY | Flag.DRAINING, held, NEW_KEY);
  const changed = loadValid(`${validText()}\n# a comment: another file, another digest\n`);
  node.reconfigure(changed, [NEW_KEY]);
  expect('a new config', Flag.READY | Flag.DRAINING, held, NEW_KEY, changed.digest);
  node.applied(new Set(), d);
  expect('released', Flag.READY | Flag.DRAINING, [], NEW_KEY, changed.digest);
});
