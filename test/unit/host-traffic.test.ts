import t from 'tap';
import { plan } from '../../src/plan/desired.js';
import { loadValid, validText } from '../helpers.js';

// Host-originated traffic: a policy whose source CIDR covers a node's own address steers
// what that node sends from it, except to its segment and to multicast (heartbeats).

const HOSTS = validText().replace(
  '    egressIP: 192.168.1.100\n',
  `    egressIP: 192.168.1.100
  - name: hosts
    sources: [{ cidrs: [192.168.1.1/32] }]
    destinations: [{ cidr: 0.0.0.0/0 }]
    action: SNAT
    gatewayRef: default
    egressIP: 192.168.1.101
`,
);
const owners = new Map([['192.168.1.101', 'worker2']]);
const chain = (p: ReturnType<typeof plan>, name: string) => p.nft.chains.find((c) => c.name === name)!.rules;

t.test("a source CIDR that covers the node's address: its own traffic is classified too", async (t) => {
  const p = plan(loadValid(HOSTS), 'worker1', owners, { cgroups: new Set() });
  const lookup = chain(p, 'prerouting').find((r) => r.startsWith('ip saddr vmap @s_'))!;
  t.ok(lookup, 'prerouting looks sources up');
  t.same(chain(p, 'output'), [
    'fib daddr type local return',
    'ct direction reply return',
    'ip daddr 192.168.1.0/24 return',
    'ip daddr 224.0.0.0/4 return',
    lookup,
  ]);
  const map = p.nft.sets.find((s) => lookup.endsWith(s.name))!;
  t.ok(
    map.elements.some((e) => e.startsWith('192.168.1.1 ') || e.startsWith('192.168.1.1/32 ')),
    "the lookup holds the node's address",
  );
});

t.test('no policy source covers the node: output is as before', async (t) => {
  const other = plan(loadValid(HOSTS), 'worker2', owners, { cgroups: new Set() });
  t.same(
    chain(other, 'output'),
    ['fib daddr type local return', 'ct direction reply return'],
    'worker2: 192.168.1.1/32 is not its address',
  );
  const plain = plan(loadValid(), 'worker1', owners, { cgroups: new Set() });
  t.same(chain(plain, 'output'), ['fib daddr type local return', 'ct direction reply return']);
});
