import t from 'tap';
import { MAX_FLOATING_IPS, nodeNamed, policySourcesOn, UnknownNodeError, type Config } from '../../src/config/model.js';
import {
  isOurRouteTable,
  isOurRulePref,
  MARK_MASK,
  MARK_SHIFT,
  markOf,
  OUR_ROUTE_TABLES,
  OUR_RULE_PREFS,
  routeTableOf,
  rulePrefOf,
} from '../../src/plan/naming.js';
import { formatCidr, parseCidr, type Cidr } from '../../src/util/ip.js';
import { loadValid } from '../helpers.js';

const cidr = (text: string): Cidr => {
  const c = parseCidr(text);
  if (!c.ok) throw new Error(c.error);
  return c.value;
};

t.test('nodeNamed: the node, or an error that names the file and the nodes there are', async (t) => {
  const config = loadValid();
  t.equal(nodeNamed(config, 'worker2').name, 'worker2');
  t.equal(nodeNamed(config, 'cp1').interface, 'eth1');
  t.throws(
    () => nodeNamed(config, 'nobody'),
    new UnknownNodeError('node "nobody" is not in valid.yaml (known: worker1, worker2, cp1)'),
  );
  try {
    nodeNamed(config, 'nobody');
  } catch (e) {
    t.ok(e instanceof UnknownNodeError, 'an UnknownNodeError');
  }
});

t.test('policySourcesOn: inline CIDRs, and the workloads selected that run on the node', async (t) => {
  const base = loadValid();
  const wl = (name: string, cidrs: string[], cgroups: string[], zone?: string) => ({
    name,
    labels: { user: 'alice' },
    cidrs: cidrs.map(cidr),
    cgroups,
    ...(zone ? { nodeSelector: { zone } } : {}),
  });
  const config: Config = {
    ...base,
    workloads: [
      wl('a', ['10.1.0.0/24'], ['shop.slice'], 'a'),
      wl('b', ['10.2.0.0/24'], ['shop.slice', 'b.slice'], 'b'),
      wl('any', [], ['any.slice']),
    ],
  };
  const policy = {
    sources: [
      { kind: 'workloads', workloads: ['a', 'b'] },
      { kind: 'cidrs', cidrs: [cidr('10.9.0.0/16')] },
      { kind: 'workloads', workloads: ['any', 'b'] },
    ] as const,
  };
  const text = (s: ReturnType<typeof policySourcesOn>) => ({
    matches: s.matches.map((m) => [...m.cidrs.map(formatCidr), ...m.cgroups]),
    cidrs: s.cidrs.map(formatCidr),
    cgroups: s.cgroups,
  });
  t.same(
    text(policySourcesOn(config, policy, { labels: { zone: 'a' } })),
    {
      matches: [['10.1.0.0/24', 'shop.slice'], ['10.9.0.0/16'], ['any.slice']],
      cidrs: ['10.1.0.0/24', '10.9.0.0/16'],
      cgroups: ['shop.slice', 'any.slice'],
    },
    'zone a: workload b does not run there',
  );
  t.same(
    text(policySourcesOn(config, policy, { labels: { zone: 'b' } })),
    {
      matches: [
        ['10.2.0.0/24', 'shop.slice', 'b.slice'],
        ['10.9.0.0/16'],
        ['any.slice'],
        ['10.2.0.0/24', 'shop.slice', 'b.slice'],
      ],
      cidrs: ['10.2.0.0/24', '10.9.0.0/16', '10.2.0.0/24'],
      cgroups: ['shop.slice', 'b.slice', 'any.slice'],
    },
    'in source order; each cgroup once',
  );
  t.same(
    text(policySourcesOn(config, policy)).cgroups,
    ['shop.slice', 'b.slice', 'any.slice'],
    'without a node: every selected workload',
  );
  t.same(text(policySourcesOn(config, policy)).cidrs, ['10.1.0.0/24', '10.2.0.0/24', '10.9.0.0/16', '10.2.0.0/24']);

  const valid = loadValid();
  const onWorker1 = policySourcesOn(valid, valid.policies[0]!, nodeNamed(valid, 'worker1'));
  t.same(onWorker1.cidrs.map(formatCidr), ['10.10.1.0/24', '10.20.0.0/16']);
  t.same(onWorker1.cgroups, ['system.slice/shop.service']);
});

t.test('marks, rule preferences and route tables hold every floating IP index', async (t) => {
  t.equal(MARK_MASK >>> MARK_SHIFT, MAX_FLOATING_IPS);
  t.equal(markOf(MAX_FLOATING_IPS) & ~MARK_MASK, 0, 'the last index fits the mask');
  t.same(OUR_ROUTE_TABLES, { min: 7601, max: 7600 + MAX_FLOATING_IPS });
  t.same(OUR_RULE_PREFS, { min: 7601, max: 7600 + MAX_FLOATING_IPS });
  for (const i of [1, 2, MAX_FLOATING_IPS]) {
    t.ok(isOurRouteTable(routeTableOf(i)), `table of index ${i}`);
    t.ok(isOurRulePref(rulePrefOf(i)), `rule of index ${i}`);
  }
  for (const n of [0, 254, 7600, 7600 + MAX_FLOATING_IPS + 1, 32766]) {
    t.notOk(isOurRouteTable(n), `table ${n} is not ours`);
    t.notOk(isOurRulePref(n), `pref ${n} is not ours`);
  }
});
