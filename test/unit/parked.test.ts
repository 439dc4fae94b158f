import t from 'tap';
import { plan } from '../../src/plan/desired.js';
import { parkedOwners } from '../../src/plan/parked.js';
import { loadValid, validText } from '../helpers.js';

// The plan of a host whose daemon does not run (docs/design.md, "Stop and start"): it
// holds nothing, and what it held is steered on-link to the IP or dropped.

const A = '192.168.1.100';
const B = '192.168.1.101';

t.test('what the host held goes on-link to its IP; what others held stays with them', async (t) => {
  const config = loadValid();
  const owners = parkedOwners(config, 'worker1', { [A]: 'worker1', [B]: 'worker2' });
  t.same(
    [...owners],
    [
      [A, 'worker2'],
      [B, 'worker2'],
    ],
  );
  const parked = plan(config, 'worker1', owners);
  t.same(parked.macvlans, [], 'no floating IP');
  t.same(
    parked.routes.map((r) => r.gateway),
    [A, B],
    'both steered on-link to their IPs',
  );
});

t.test('an IP no other node may hold, or that had no owner, gets noGateway', async (t) => {
  const alone = loadValid(
    validText().replace('labels: { node-type: egressNat }\n  - name: cp1', 'labels: {}\n  - name: cp1'),
  );
  const parked = plan(alone, 'worker1', parkedOwners(alone, 'worker1', { [A]: 'worker1' }));
  t.same(
    parked.egress.map((e) => [e.ip, e.mode]),
    [
      [A, 'drop'],
      [B, 'drop'],
    ],
  );
});

t.test('an owner the config no longer admits: another candidate (the route is the same)', async (t) => {
  const owners = parkedOwners(loadValid(), 'worker2', { [A]: 'cp1', '192.168.1.99': 'worker1' });
  t.same([...owners], [[A, 'worker1']], 'and IPs the config lacks are left out');
});

t.test('for any record, the parked plan holds nothing and steers or drops every IP', async (t) => {
  const config = loadValid();
  const names = ['worker1', 'worker2', 'cp1', undefined];
  for (const self of ['worker1', 'worker2', 'cp1']) {
    for (const a of names) {
      for (const b of names) {
        const last: Record<string, string> = { ...(a ? { [A]: a } : {}), ...(b ? { [B]: b } : {}) };
        const parked = plan(config, self, parkedOwners(config, self, last));
        t.same(parked.macvlans, [], `${self} ${JSON.stringify(last)}: no macvlan`);
        t.same(
          parked.egress.map((e) => e.mode),
          [a ? 'remote' : 'drop', b ? 'remote' : 'drop'],
          `${self} ${JSON.stringify(last)}: remote where there was an owner, else noGateway`,
        );
      }
    }
  }
});
