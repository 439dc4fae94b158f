import t from 'tap';
import { loadConfigText } from '../../src/config/load.js';
import type { Config } from '../../src/config/model.js';
import { elect, type Claim, type LiveNode } from '../../src/cluster/ownership.js';
import { candidates, floatingIPs } from '../../src/plan/desired.js';
import { fakeKeyFile, rng } from '../helpers.js';

// Property tests of the election (docs/design.md, "Election rules") over random clusters.

interface Shape {
  nodes: { name: string; role: 'worker' | 'control-plane'; zone: string }[];
  gateways: { zone?: string; ips: number }[];
}

function configOf(shape: Shape): Config {
  let ip = 100;
  const text = `version: 1
cluster:
  name: prop
  interface: eth0
  heartbeat: { interval: 100ms, missed: 3, transport: multicast, group: 239.255.76.67, port: 7607, keyFile: good.key }
  noGateway: drop
nodes:
${shape.nodes.map((n, i) => `  - { name: ${n.name}, address: 192.168.1.${i + 1}/24, role: ${n.role}, labels: { zone: ${n.zone} } }`).join('\n')}
gateways:
${shape.gateways
  .map(
    (g, i) => `  - name: g${i}
    floatingIPs: [${Array.from({ length: g.ips }, () => `192.168.1.${ip++}`).join(', ')}]${g.zone ? `\n    nodeSelector: { zone: ${g.zone} }` : ''}`,
  )
  .join('\n')}
workloads: []
policies:
  - { name: p, sources: [{ cidrs: [10.0.0.0/8] }], destinations: [{ cidr: 0.0.0.0/0 }], action: SNAT, gatewayRef: g0 }
`;
  const r = loadConfigText('prop.yaml', text, fakeKeyFile);
  if (!r.config) throw new Error(`generated config is invalid:\n${text}\n${JSON.stringify(r.diagnostics)}`);
  return r.config;
}

function randomCase(rand: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const n = 1 + Math.floor(rand() * 5);
  const nodes = Array.from({ length: n }, (_, i) => ({
    name: `n${i}`,
    role: rand() < 0.3 ? ('control-plane' as const) : ('worker' as const),
    zone: pick(['a', 'b']),
  }));
  const zones = [...new Set(nodes.map((x) => x.zone))];
  const gateways = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => ({
    ...(rand() < 0.5 ? { zone: pick(zones) } : {}),
    ips: 1 + Math.floor(rand() * 3),
  }));
  const config = configOf({ nodes, gateways });
  const live: LiveNode[] = nodes
    .filter(() => rand() < 0.8)
    .map((x) => {
      const r = rand();
      return { name: x.name, eligible: r < 0.7, mayKeep: r >= 0.7 && r < 0.85, joining: r >= 0.85 && r < 0.95 };
    });
  const claims: Claim[] = floatingIPs(config).flatMap((f) =>
    nodes.filter(() => rand() < 0.25).map((x) => ({ ip: f.text, node: x.name })),
  );
  return { config, live, claims };
}

const shuffle = <T>(xs: readonly T[], rand: () => number): T[] => {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
};

const ownersOf = (config: Config, live: LiveNode[], claims: Claim[]) => [...elect(config, live, claims).owners];

t.test('same answer for any input order', async (t) => {
  const rand = rng(1);
  for (let i = 0; i < 500; i++) {
    const { config, live, claims } = randomCase(rand);
    const a = ownersOf(config, live, claims);
    const b = ownersOf(config, shuffle(live, rand), shuffle(claims, rand));
    if (JSON.stringify(a) !== JSON.stringify(b)) t.fail(`case ${i}: order changed the answer`, { a, b });
  }
  t.pass('500 random clusters, shuffled inputs');
});

t.test('every IP owned by exactly one live candidate while an eligible candidate is Up', async (t) => {
  const rand = rng(2);
  let checked = 0;
  for (let i = 0; i < 1000; i++) {
    const { config, live, claims } = randomCase(rand);
    const { owners } = elect(config, live, claims);
    const liveBy = new Map(live.map((l) => [l.name, l]));
    for (const f of floatingIPs(config)) {
      const cands = candidates(config, f).filter((c) => liveBy.has(c.name));
      const owner = owners.get(f.text);
      const anyEligible = cands.some((c) => liveBy.get(c.name)!.eligible);
      if (anyEligible && owner === undefined) t.fail(`case ${i}: ${f.text} unowned with an eligible candidate`);
      if (owner !== undefined) {
        const o = liveBy.get(owner);
        if (!o || !cands.some((c) => c.name === owner))
          t.fail(`case ${i}: ${f.text} owned by ${owner}, not a live candidate`);
        if (
          o &&
          !o.eligible &&
          !o.joining &&
          !(o.mayKeep && claims.some((c) => c.ip === f.text && c.node === owner) && !anyEligible)
        ) {
          t.fail(`case ${i}: ${f.text} kept by ineligible ${owner} although it may not`);
        }
        const claimants = claims.filter(
          (c) => c.ip === f.text && liveBy.get(c.node)?.eligible && cands.some((x) => x.name === c.node),
        );
        if (claimants.length && !claimants.some((c) => c.node === owner))
          t.fail(`case ${i}: ${f.text} taken from its live owner`);
        checked++;
      }
    }
  }
  t.ok(checked > 500, `${checked} owned IPs checked`);
});

t.test('a node that joins or returns takes nothing from a live owner', async (t) => {
  const rand = rng(3);
  for (let i = 0; i < 500; i++) {
    const { config, live, claims } = randomCase(rand);
    const first = elect(config, live, claims).owners;
    const held: Claim[] = [...first].map(([ip, node]) => ({ ip, node }));
    const newcomers = config.nodes.filter((n) => !live.some((l) => l.name === n.name));
    const later = [...live, ...newcomers.map((n) => ({ name: n.name, eligible: true }))];
    const second = elect(config, later, held).owners;
    for (const [ip, node] of first) {
      if (live.find((l) => l.name === node)!.eligible && second.get(ip) !== node)
        t.fail(`case ${i}: ${ip} moved from ${node} to ${second.get(ip)}`);
    }
  }
  t.pass('500 random joins');
});

t.test('conflicting claims settle on one owner, the same for everyone', async (t) => {
  const config = configOf({
    nodes: [
      { name: 'a', role: 'worker', zone: 'a' },
      { name: 'b', role: 'worker', zone: 'a' },
      { name: 'c', role: 'control-plane', zone: 'a' },
    ],
    gateways: [{ ips: 2 }],
  });
  const live = ['a', 'b', 'c'].map((name) => ({ name, eligible: true }));
  const claims = [
    { ip: '192.168.1.100', node: 'a' },
    { ip: '192.168.1.100', node: 'b' },
    { ip: '192.168.1.101', node: 'a' },
    { ip: '192.168.1.101', node: 'c' },
  ];
  const e = elect(config, live, claims);
  t.ok(['a', 'b'].includes(e.owners.get('192.168.1.100')!));
  t.equal(e.reasons.get('192.168.1.100'), 'conflict');
  t.equal(e.owners.get('192.168.1.101'), 'a', 'a worker wins a conflict against a control-plane node');
  t.same([...elect(config, [...live].reverse(), [...claims].reverse()).owners], [...e.owners]);
});

/** The smallest possible maximum load, by trying every assignment of the unowned IPs. */
function bruteForceMaxLoad(
  config: Config,
  live: LiveNode[],
  claims: Claim[],
  owners: ReadonlyMap<string, string>,
  reasons: ReadonlyMap<string, string>,
): number {
  const liveBy = new Map(live.map((l) => [l.name, l]));
  const fixed = new Map<string, number>();
  const choices: string[][] = [];
  for (const f of floatingIPs(config)) {
    const owner = owners.get(f.text);
    if (owner === undefined) continue;
    if (reasons.get(f.text) !== 'assigned') {
      fixed.set(owner, (fixed.get(owner) ?? 0) + 1);
      continue;
    }
    const able = candidates(config, f).filter((c) => liveBy.get(c.name)?.eligible || liveBy.get(c.name)?.joining);
    const workers = able.filter((c) => c.role === 'worker');
    choices.push((workers.length ? workers : able).map((c) => c.name));
  }
  void claims;
  let bestMax = Infinity;
  const load = new Map(fixed);
  const go = (i: number): void => {
    if (i === choices.length) {
      bestMax = Math.min(bestMax, Math.max(0, ...load.values()));
      return;
    }
    for (const n of choices[i]!) {
      load.set(n, (load.get(n) ?? 0) + 1);
      go(i + 1);
      load.set(n, load.get(n)! - 1);
    }
  };
  go(0);
  return bestMax;
}

t.test('spread is optimal where the rules allow', async (t) => {
  const three = configOf({
    nodes: [
      { name: 'w1', role: 'worker', zone: 'a' },
      { name: 'w2', role: 'worker', zone: 'a' },
      { name: 'w3', role: 'worker', zone: 'a' },
      { name: 'cp', role: 'control-plane', zone: 'a' },
    ],
    gateways: [{ ips: 3 }],
  });
  const all = ['w1', 'w2', 'w3', 'cp'].map((name) => ({ name, eligible: true }));
  t.same(
    [...elect(three, all, []).owners.values()].sort(),
    ['w1', 'w2', 'w3'],
    '3 IPs, 3 eligible workers: one each, none on the control plane',
  );
  t.same(
    [
      ...elect(
        three,
        all.filter((n) => n.name.startsWith('w') === false || n.name === 'w1'),
        [],
      ).owners.values(),
    ].sort(),
    ['w1', 'w1', 'w1'],
    'workers first even when loaded',
  );
  const onlyCp = elect(three, [{ name: 'cp', eligible: true }], []);
  t.same([...onlyCp.owners.values()], ['cp', 'cp', 'cp'], 'the control plane when no worker is eligible');
  const coldStart = elect(
    three,
    [
      { name: 'w1', eligible: true },
      { name: 'w2', eligible: false, joining: true },
      { name: 'w3', eligible: false, joining: true },
    ],
    [],
  );
  t.same(
    [...coldStart.owners.values()].sort(),
    ['w1', 'w2', 'w3'],
    'cold start: the first ready node waits for the joining ones instead of taking all',
  );

  const rand = rng(4);
  for (let i = 0; i < 1000; i++) {
    const { config, live, claims } = randomCase(rand);
    const { owners, reasons } = elect(config, live, claims);
    const got = Math.max(
      0,
      ...[...owners.values()].reduce((m, n) => m.set(n, (m.get(n) ?? 0) + 1), new Map<string, number>()).values(),
    );
    const opt = bruteForceMaxLoad(config, live, claims, owners, reasons);
    if (got !== opt)
      t.fail(`case ${i}: busiest node holds ${got}, the best possible is ${opt}`, {
        owners: [...owners],
        live,
        claims,
      });
  }
  t.pass('1000 random clusters match the brute-force optimum');
});
