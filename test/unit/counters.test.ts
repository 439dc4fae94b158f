import t from 'tap';
import { diffTable } from '../../src/dataplane/nftdiff.js';
import { plan } from '../../src/plan/desired.js';
import { renderTable } from '../../src/plan/nft.js';
import { loadValid, validText } from '../helpers.js';

// The named counters of the plan (docs/datapath.md, "Counters"): per floating IP and
// per policy, the same on every node whoever owns what, so that they keep counting
// across changes of the plan.

const owners = (o: Record<string, string>) => new Map(Object.entries(o));
const counters = (nft: ReturnType<typeof plan>['nft']) =>
  nft.sets.filter((s) => s.kind === 'counter' && !s.name.startsWith('relay_')).map((s) => s.name);

const TWO_POLICIES = validText().replace(
  '    egressIP: 192.168.1.100\n',
  `    egressIP: 192.168.1.100
  - name: batch
    sources: [{ cidrs: [10.30.0.0/16] }]
    destinations: [{ cidr: 8.8.8.0/24 }]
    action: SNAT
    gatewayRef: default
    egressIP: 192.168.1.101
`,
);

t.test('counters per floating IP and per policy, whoever owns what', async (t) => {
  const config = loadValid(TWO_POLICIES);
  const all = [
    ['out_c0a80164', 'new_c0a80164', 'nogw_c0a80164', 'out_c0a80165', 'new_c0a80165', 'nogw_c0a80165'],
    ['policy_egress', 'policy_batch'],
  ].flat();
  for (const [node, o] of [
    ['worker1', {}],
    ['worker1', { '192.168.1.100': 'worker2' }],
    ['worker2', { '192.168.1.100': 'worker2', '192.168.1.101': 'worker2' }],
    ['cp1', { '192.168.1.101': 'worker1' }],
  ] as const)
    t.same(counters(plan(config, node, owners(o)).nft), all, `${node} with ${JSON.stringify(o)}`);
});

t.test('where they count', async (t) => {
  const config = loadValid(TWO_POLICIES);
  const nft = plan(config, 'worker2', owners({ '192.168.1.100': 'worker2' })).nft;
  const chain = (name: string) => nft.chains.find((c) => c.name === name)!;
  t.same(chain('pol_0').rules, ['iifname != "enat*" counter name "policy_egress"', 'goto egress_1']);
  t.same(chain('pol_1').rules, ['iifname != "enat*" counter name "policy_batch"', 'goto egress_2']);
  t.same(chain('egress_2').rules, ['counter name "nogw_c0a80165" drop'], 'an IP without owner: its drops, counted');
  const count = chain('count');
  t.same(count.hook, { type: 'filter', hook: 'postrouting', prio: 120, prioText: 'srcnat + 20', policy: 'accept' });
  const map = (rule: string) => nft.sets.find((s) => s.name === /@(\S+)$/.exec(rule)![1])!;
  t.match(count.rules[0], /^counter name ip saddr map @co_/, 'after SNAT, by source: what leaves with each IP');
  t.same(map(count.rules[0]!).elements, ['192.168.1.100 : "out_c0a80164"', '192.168.1.101 : "out_c0a80165"']);
  t.match(count.rules[1], /^ct state new counter name ip saddr map @cn_/, 'and the connections started');
  t.same(map(count.rules[1]!).elements, ['192.168.1.100 : "new_c0a80164"', '192.168.1.101 : "new_c0a80165"']);
  const lookups = nft.sets.filter((s) => s.name.startsWith('d_')).flatMap((s) => s.elements);
  t.ok(lookups.length > 0);
  t.ok(
    lookups.every((e) => / : goto pol_[01]$/.test(e)),
    "every destination lookup ends in its policy's chain",
  );
  const text = renderTable(nft);
  t.ok(text.indexOf('counter out_c0a80164') < text.indexOf('map co_'), 'counters come before the maps that name them');
});

t.test('a stale map goes before the counters it names', async (t) => {
  const config = loadValid(TWO_POLICIES);
  const want = plan(config, 'worker1', owners({})).nft;
  const have = {
    exists: true,
    chains: new Map(),
    sets: new Map([
      ['out_0a000001', 'counter' as const],
      ['co_000000000000', 'map' as const],
    ]),
  };
  const deletes = diffTable(want, have).commands.filter((c) => c.startsWith('delete '));
  t.same(deletes, ['delete map inet egress_natd co_000000000000', 'delete counter inet egress_natd out_0a000001']);
});
