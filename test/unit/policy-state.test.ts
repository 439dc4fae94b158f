import t from 'tap';
import { policyStates } from '../../src/daemon/policy-state.js';
import type { NodeStatus, View } from '../../src/daemon/status.js';
import { loadValid, validText } from '../helpers.js';

// Each policy's state and reason, as `status` and egress_natd_policy_state show them.

const IP = '192.168.1.100';
const node = (s: Partial<NodeStatus> = {}): NodeStatus => ({
  state: 'Up',
  eligible: true,
  draining: false,
  carrier: true,
  holds: [],
  ...s,
});
const view = (nodes: Record<string, NodeStatus>, owners: Record<string, string> = {}, self = 'cp1'): View => ({
  self,
  nodes: new Map(Object.entries(nodes)),
  owners: new Map(Object.entries(owners)),
});

t.test('Active: its IP has an owner', async (t) => {
  const s = policyStates(loadValid(), view({ cp1: node(), worker2: node() }, { [IP]: 'worker2' }));
  t.same(s['egress'], { egressIP: IP, gateway: 'worker2', state: 'Active', reason: `${IP} is held by worker2` });
});

t.test('NoGateway: no live candidate, or none eligible, with what the traffic gets', async (t) => {
  const config = loadValid();
  const down = policyStates(config, view({ cp1: node() }))['egress']!;
  t.equal(down.state, 'NoGateway');
  t.equal(down.reason, `no live candidate for ${IP} (worker1, worker2 Down); its traffic is dropped (noGateway)`);
  const blocked = policyStates(
    config,
    view({
      cp1: node(),
      worker1: node({ eligible: false, draining: true }),
      worker2: node({ eligible: false, carrier: false }),
    }),
  )['egress']!;
  t.equal(blocked.state, 'NoGateway');
  t.equal(
    blocked.reason,
    `no eligible candidate for ${IP} (worker1 draining, worker2 no carrier); its traffic is dropped (noGateway)`,
  );
  const masq = loadValid(validText().replace('noGateway: drop', 'noGateway: masquerade'));
  t.match(policyStates(masq, view({ cp1: node() }))['egress']!.reason, /its traffic is masqueraded \(noGateway\)$/);
});

t.test('Invalid: what the config alone keeps from ever flowing, even with an owner', async (t) => {
  const owned = view({ cp1: node(), worker1: node() }, { [IP]: 'worker1' });
  const excluded = loadValid(validText().replace('cidr: 8.8.8.8/32', 'cidr: 8.8.0.0/16'));
  t.same(policyStates(excluded, owned)['egress']!.state, 'Invalid');
  t.equal(policyStates(excluded, owned)['egress']!.reason, 'its excluded destinations cover all its destinations');
  const noSource = loadValid(
    validText()
      .replace('matchLabels: { user: alice, role: frontend }', 'matchLabels: { user: bob }')
      .replace(/\n\s*- cidrs: \[10\.20\.0\.0\/16\]/, ''),
  );
  t.same(policyStates(noSource, owned)['egress']!.state, 'Invalid');
  t.equal(
    policyStates(noSource, owned)['egress']!.reason,
    'it selects no source: its workloadSelector matches no workload',
  );
});
