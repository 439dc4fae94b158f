import t from 'tap';
import { diffTable, shortSummary, SUMMARY_LINES } from '../../src/dataplane/nftdiff.js';
import { plan } from '../../src/plan/desired.js';
import { ruleComment, renderTable, type NftTableSpec } from '../../src/plan/nft.js';
import { parseAddress } from '../../src/util/ip.js';
import { loadValid, validText } from '../helpers.js';

const owners = (o: Record<string, string>) => new Map(Object.entries(o));

t.test('plan is deterministic', async (t) => {
  const config = loadValid();
  const a = plan(config, 'worker1', owners({ '192.168.1.100': 'worker2' }));
  const b = plan(loadValid(), 'worker1', owners({ '192.168.1.100': 'worker2' }));
  t.equal(JSON.stringify(a), JSON.stringify(b), 'same input, same JSON');
  t.equal(renderTable(a.nft), renderTable(b.nft), 'same input, same nft');
});

t.test('source host, owner, and nobody', async (t) => {
  const config = loadValid();
  const source = plan(config, 'worker1', owners({ '192.168.1.100': 'worker2' }));
  t.same(source.macvlans, [], 'a source host holds no floating IP');
  t.same(
    source.routes,
    [{ table: 7601, gateway: '192.168.1.100', dev: 'eth0' }],
    'it routes marked traffic to the floating IP on-link',
  );
  t.equal(source.egress[0]!.mode, 'remote');
  t.equal(source.egress[1]!.mode, 'drop', 'an unowned IP follows noGateway');
  t.match(renderTable(source.nft), /chain egress_2 \{\n\t\tcounter name "nogw_c0a80165" drop/, 'counted per IP');

  const owner = plan(config, 'worker2', owners({ '192.168.1.100': 'worker2' }));
  t.same(
    owner.macvlans.map((m) => [m.name, m.mac, m.address]),
    [['enatc0a80164', '02:ee:c0:a8:01:64', '192.168.1.100']],
  );
  t.same(owner.routes, [], 'the owner does not route its own IP away');
  const text = renderTable(owner.nft);
  t.match(text, 'snat ip to iifname map', 'it SNATs what other hosts steer to its macvlan');
  t.match(text, 'snat ip to meta mark & 0x00ff0000 map', 'and its own marked traffic');
  t.same(
    owner.sysctls.map((s) => `${s.path}=${s.value}`),
    ['net/ipv4/conf/eth0/arp_ignore=1', 'net/ipv4/conf/eth0/arp_announce=2'],
  );
  const cp = plan(config, 'cp1', owners({}));
  t.same(cp.sysctls, [], 'a node that may own nothing keeps its ARP settings');
});

t.test("the leak guard and the conntrack mark follow each IP's mode", async (t) => {
  const config = loadValid();
  const chain = (text: string, name: string) => text.slice(text.indexOf(`chain ${name} {`)).split('\n\t}')[0]!;
  const source = renderTable(plan(config, 'worker1', owners({ '192.168.1.100': 'worker2' })).nft);
  t.match(
    chain(source, 'egress_1'),
    /ct state new ct mark set ct mark & 0xff00ffff \| 0x00010000.*\n.*meta mark set/,
    'remote: a new connection carries the IP in its conntrack mark (flushed when this host takes the IP)',
  );
  const guard = chain(source, 'leakguard');
  t.match(guard, 'type filter hook postrouting priority srcnat + 10; policy accept;', 'after SNAT');
  t.match(
    guard,
    'meta mark & 0x00ff0000 == 0x00010000 rt ip nexthop != 192.168.1.100 counter drop',
    'remote: toward its owner only',
  );
  t.notMatch(guard, '0x00020000', 'a dropped IP needs no guard: its traffic never gets its mark');
  const owner = renderTable(plan(config, 'worker2', owners({ '192.168.1.100': 'worker2' })).nft);
  t.notMatch(chain(owner, 'egress_1'), 'ct mark', 'local: no conntrack mark (nothing to flush later)');
  t.match(
    chain(owner, 'leakguard'),
    'meta mark & 0x00ff0000 == 0x00010000 ip saddr != 192.168.1.100 counter drop',
    'local: only with the floating IP as source',
  );
});

t.test('cgroups that do not exist are left out', async (t) => {
  const config = loadValid();
  const without = renderTable(plan(config, 'worker1', owners({}), { cgroups: new Set() }).nft);
  const withIt = renderTable(
    plan(config, 'worker1', owners({}), { cgroups: new Set(['system.slice/shop.service']) }).nft,
  );
  t.notMatch(without, 'socket cgroupv2');
  t.match(withIt, 'socket cgroupv2 level 2 vmap');
});

t.test('owners are checked', async (t) => {
  const config = loadValid();
  t.throws(() => plan(config, 'nobody', owners({})), /node "nobody" is not in valid.yaml/);
  t.throws(() => plan(config, 'worker1', owners({ '192.168.1.150': 'worker1' })), /not a floating IP/);
  t.throws(() => plan(config, 'worker1', owners({ '192.168.1.100': 'cp1' })), /cannot own/);
});

t.test('the nft diff', async (t) => {
  const config = loadValid();
  const want = plan(config, 'worker1', owners({ '192.168.1.100': 'worker2' })).nft;
  const empty = diffTable(want, { exists: false, chains: new Map(), sets: new Map() });
  t.equal(empty.staged[0], 'add table inet egress_natd');
  const base = new Set(want.chains.filter((c) => c.hook).map((c) => c.name));
  t.same(
    empty.commands.filter((c) => !/^add (chain|rule) inet egress_natd /.test(c) || !base.has(c.split(' ')[4]!)),
    [],
    'on an empty host the second transaction makes only the base chains',
  );
  const same = {
    exists: true,
    chains: new Map(
      want.chains.map((c) => [
        c.name,
        {
          ...(c.hook
            ? { hook: { type: c.hook.type, hook: c.hook.hook, prio: c.hook.prio, policy: c.hook.policy } }
            : {}),
          rules: c.rules.map(ruleComment),
        },
      ]),
    ),
    sets: new Map(want.sets.map((s) => [s.name, s.kind] as const)),
  };
  t.same(diffTable(want, same), { staged: [], commands: [], summary: [] }, 'nothing differs, nothing to do');

  // The owner changes: only the per-IP chain and the postrouting maps change; the classification stays.
  const moved = plan(config, 'worker1', owners({ '192.168.1.100': 'worker1' })).nft;
  const d = diffTable(moved, same);
  t.notOk(
    [...d.staged, ...d.commands].some((c) => /add map inet egress_natd [sd]_/.test(c)),
    'classification maps are kept',
  );
  t.ok(
    d.commands.some((c) => c.startsWith('flush chain inet egress_natd postrouting')),
    'postrouting is replaced',
  );
  const stale = {
    ...same,
    sets: new Map([...same.sets, ['d_000000000000', 'map' as const]]),
    chains: new Map([...same.chains, ['c_000000000000', { rules: ['x'] }]]),
  };
  const cleaned = diffTable(want, stale).commands;
  t.same(
    cleaned,
    [
      'flush chain inet egress_natd c_000000000000',
      'delete map inet egress_natd d_000000000000',
      'delete chain inet egress_natd c_000000000000',
    ],
    'stale chains are emptied before their sets go, and go last',
  );
});

t.test('a reload that inserts a floating IP does not renumber the others', async (t) => {
  const config = loadValid();
  const first = plan(config, 'worker2', new Map([['192.168.1.100', 'worker1']]));
  t.same(
    first.egress.map((e) => [e.ip, e.index]),
    [
      ['192.168.1.100', 1],
      ['192.168.1.101', 2],
    ],
    'file order at first',
  );
  const a = parseAddress('192.168.1.99');
  if (!a.ok) throw new Error(a.error);
  const grown = {
    ...config,
    gateways: config.gateways.map((g) => ({ ...g, floatingIPs: [a.value, ...g.floatingIPs] })),
  };
  const owners = new Map([['192.168.1.100', 'worker1']]);
  const indexes = new Map(first.egress.map((e) => [e.ip, e.index]));
  const next = plan(grown, 'worker2', owners, { indexes });
  t.same(
    next.egress.map((e) => [e.ip, e.index]),
    [
      ['192.168.1.99', 3],
      ['192.168.1.100', 1],
      ['192.168.1.101', 2],
    ],
    'kept indexes; the new IP takes the lowest free one',
  );
  const of = (d: typeof first, ip: string) => {
    const e = d.egress.find((x) => x.ip === ip)!;
    return {
      mark: e.mark,
      rules: d.rules.filter((r) => r.fwmark === e.mark),
      routes: d.routes.filter((r) => r.gateway === ip),
    };
  };
  t.same(
    of(next, '192.168.1.100'),
    of(first, '192.168.1.100'),
    'the mark, rule and route of a flowing IP are the same objects',
  );
  t.same(
    plan(grown, 'worker2', owners).egress.map((e) => e.index),
    [1, 2, 3],
    "without the daemon's indexes: file order (a restart renumbers)",
  );
  const removed = { ...config, gateways: config.gateways.map((g) => ({ ...g, floatingIPs: g.floatingIPs.slice(1) })) };
  t.same(
    plan(removed, 'worker2', new Map(), { indexes }).egress.map((e) => [e.ip, e.index]),
    [['192.168.1.101', 2]],
    'a removed IP frees its index; the others keep theirs',
  );
});

// The relay guard (docs/datapath.md, "The relay guard"), evaluated on the planned table:
// what happens to a packet from `src` to `dst` that arrives on the macvlan `iif`.
function guardVerdict(nft: NftTableSpec, iif: string, src: string, dst: string): string {
  const sets = new Map(nft.sets.map((s) => [s.name, s.elements]));
  const chains = new Map(nft.chains.map((c) => [c.name, c.rules]));
  const addr = (text: string) => {
    const a = parseAddress(text);
    if (!a.ok) throw new Error(a.error);
    return a.value.value;
  };
  const inElement = (key: string, v: bigint): boolean => {
    if (key.includes('-')) return addr(key.split('-')[0]!) <= v && v <= addr(key.split('-')[1]!);
    const [base, prefix] = key.split('/');
    const host = (1n << BigInt(32 - Number(prefix ?? 32))) - 1n;
    return (v & ~host) === addr(base!);
  };
  const lookup = (set: string, match: (key: string) => boolean) =>
    sets
      .get(set)!
      .map((e) => e.split(' : '))
      .find(([key]) => match(key!))?.[1];
  const run = (chain: string): string => {
    if (chain.startsWith('egress_')) return `accept ${chain}`;
    for (const rule of chains.get(chain)!) {
      const vmap = /^ip (saddr|daddr) vmap @(\S+)$/.exec(rule);
      if (vmap) {
        const verdict = lookup(vmap[2]!, (k) => inElement(k, addr(vmap[1] === 'saddr' ? src : dst)));
        if (verdict) return run(verdict.replace('goto ', ''));
        continue;
      }
      // A policy's chain: relayed packets (they arrive on a macvlan) are not counted again; on to its egress chain.
      if (/^iifname != "enat\*" counter name "policy_\S+"$/.test(rule)) continue;
      const next = /^goto (\S+)$/.exec(rule);
      if (next) return run(next[1]!);
      const drop = /^counter name "relay_[0-9a-f]+_(\w+)" drop$/.exec(rule);
      if (drop) return drop[1]!;
      throw new Error(`unexpected rule in ${chain}: ${rule}`);
    }
    return 'falls through';
  };
  const dispatch = chains.get('prerouting')!.find((r) => r.startsWith('meta pkttype host iifname vmap @'));
  if (!dispatch) return 'no guard';
  const to = lookup(dispatch.split('@')[1]!, (k) => k === `"${iif}"`);
  return to ? run(to.replace('goto ', '')) : 'no guard';
}

const GUARDED = validText()
  .replace('    role: control-plane\n', '    role: control-plane\n    labels: { zone: b }\n')
  .replace(
    '    cgroups: [system.slice/shop.service]\n',
    `    cgroups: [system.slice/shop.service]
    nodeSelector: { zone: b }
  - name: api
    labels: { app: api }
    cidrs: [10.10.2.0/24]
`,
  )
  .concat(
    `  - name: others
    sources: [{ cidrs: [10.20.0.0/16] }]
    destinations: [{ cidr: 1.1.1.0/24 }]
    action: SNAT
    gatewayRef: default
    egressIP: 192.168.1.100
  - name: api
    sources: [{ workloadSelector: { matchLabels: { app: api } } }]
    destinations: [{ cidr: 9.9.9.0/24 }]
    action: SNAT
    gatewayRef: default
    egressIP: 192.168.1.101
  - name: shop-dns
    sources: [{ workloadSelector: { matchLabels: { user: alice } } }]
    destinations: [{ cidr: 9.9.9.0/24 }]
    action: SNAT
    gatewayRef: default
    egressIP: 192.168.1.101
`,
  );

t.test('relay guard: on owned IPs only, a source of one of its policies to that policy’s destinations', async (t) => {
  const config = loadValid(GUARDED);
  t.ok(config.workloads.find((w) => w.name === 'shop-frontend')?.nodeSelector, 'shop runs on cp1 only');
  const [A, B] = ['enatc0a80164', 'enatc0a80165'];
  const worker1 = plan(config, 'worker1', owners({ '192.168.1.100': 'worker2' }));
  t.equal(guardVerdict(worker1.nft, A, '10.10.1.5', '8.8.8.1'), 'no guard', 'no guard where the IP is not owned');
  t.notOk(
    worker1.nft.chains.some((c) => c.name.startsWith('relay_') || c.name.startsWith('rc_')),
    'no guard chains',
  );
  t.notOk(
    worker1.nft.sets.some((s) => s.kind === 'counter' && s.name.startsWith('relay_')),
    'no relay counters',
  );

  const one = plan(config, 'worker2', owners({ '192.168.1.100': 'worker2', '192.168.1.101': 'worker1' })).nft;
  t.same(
    one.sets.filter((s) => s.kind === 'counter' && s.name.startsWith('relay_')).map((s) => s.name),
    ['relay_c0a80164_source', 'relay_c0a80164_destination'],
    'two counters for the owned IP',
  );
  t.same(
    one.sets.find((s) => s.name.startsWith('rs_'))?.elements.map((e) => e.split(' : ')[0]),
    ['10.10.1.0/24', '10.20.0.0/16', '192.168.1.3/32'],
    "members: policy CIDRs, workloads on any node, addresses of nodes that run a policy's cgroups",
  );
  t.notOk(
    one.sets.find((s) => s.name.startsWith('s_'))?.elements.some((e) => e.startsWith('10.10.1.0/24')),
    'while the host steers only what runs on it',
  );
  t.equal(guardVerdict(one, B, '10.10.2.5', '9.9.9.9'), 'no guard', 'the IP owned by another node is not guarded here');
  const cases: [string, string, string, string][] = [
    ['10.10.1.5', '8.8.8.1', 'accept egress_1', 'a workload that runs on another node'],
    ['192.168.1.3', '8.8.8.1', 'accept egress_1', 'the address of a node that runs the cgroup'],
    ['10.20.5.5', '1.1.1.1', 'accept egress_1', 'inline CIDRs'],
    ['192.168.1.1', '8.8.8.1', 'source', 'a node that does not run the cgroup'],
    ['192.168.1.50', '8.8.8.1', 'source', 'a stranger'],
    ['10.10.2.5', '9.9.9.9', 'source', 'a source of another IP only'],
    ['10.10.1.5', '8.8.8.8', 'destination', 'an excluded destination'],
    ['10.10.1.5', '1.1.1.1', 'destination', "another policy's destination on the same IP"],
    ['10.10.1.5', '9.9.9.9', 'destination', "a destination of the source's policy on another IP"],
    ['10.20.5.5', '9.9.9.9', 'destination', 'inline CIDRs to a destination none of their policies names'],
  ];
  for (const [src, dst, want, why] of cases) t.equal(guardVerdict(one, A, src, dst), want, `${src} -> ${dst}: ${why}`);

  const both = plan(config, 'worker2', owners({ '192.168.1.100': 'worker2', '192.168.1.101': 'worker2' })).nft;
  t.equal(guardVerdict(both, B, '10.10.2.5', '9.9.9.9'), 'accept egress_2', 'each owned IP its own guard');
  t.equal(guardVerdict(both, B, '10.10.1.5', '9.9.9.9'), 'accept egress_2');
  t.equal(guardVerdict(both, B, '10.10.1.5', '8.8.8.1'), 'destination');
  t.equal(guardVerdict(both, A, '10.10.1.5', '8.8.8.1'), 'accept egress_1');

  const guard = (nft: NftTableSpec) => ({
    chains: nft.chains.filter((c) => /^(relay|rc)_/.test(c.name)),
    sets: nft.sets.filter((s) => /^r[sg]_/.test(s.name) || s.kind === 'counter'),
  });
  const again = plan(loadValid(GUARDED), 'worker2', owners({ '192.168.1.100': 'worker2', '192.168.1.101': 'worker2' }));
  t.equal(JSON.stringify(guard(again.nft)), JSON.stringify(guard(both)), 'deterministic');
  const other = plan(config, 'worker1', owners({ '192.168.1.100': 'worker1', '192.168.1.101': 'worker1' })).nft;
  t.same(guard(other), guard(both), 'the same guard on any owner: a new owner takes what the old one took');

  const lost = diffTable(one, { exists: false, chains: new Map(), sets: new Map() });
  t.ok(lost.staged.includes('add counter inet egress_natd relay_c0a80164_source {  }'), 'counters are made');
  const gone = diffTable(worker1.nft, {
    exists: true,
    chains: new Map(one.chains.map((c) => [c.name, { rules: c.rules.map(ruleComment) }])),
    sets: new Map(one.sets.map((s) => [s.name, s.kind])),
  }).commands;
  const at = (cmd: string) => gone.indexOf(cmd);
  t.ok(at('delete counter inet egress_natd relay_c0a80164_source') > at('flush chain inet egress_natd relay_c0a80164'));
  t.ok(
    at('delete counter inet egress_natd relay_c0a80164_source') < at('delete chain inet egress_natd relay_c0a80164'),
    'a lost IP: its guard is emptied, its counters go, then its chains',
  );
});

t.test('new sets are made in a transaction before the one that starts using them', async (t) => {
  // A set made in the transaction whose rules start using it misses lookups for a moment
  // after the commit (test/lab/reload-leak.test.ts): the switch must find it already there.
  const config = loadValid();
  const before = plan(config, 'worker1', owners({ '192.168.1.100': 'worker2' })).nft;
  const after = plan(config, 'worker1', owners({ '192.168.1.100': 'worker1' })).nft;
  const have = {
    exists: true,
    chains: new Map(
      before.chains.map((c) => [
        c.name,
        {
          rules: c.rules.map(ruleComment),
          ...(c.hook
            ? { hook: { type: c.hook.type, hook: c.hook.hook, prio: c.hook.prio, policy: c.hook.policy } }
            : {}),
        },
      ]),
    ),
    sets: new Map(before.sets.map((s) => [s.name, s.kind] as const)),
  };
  const d = diffTable(after, have);
  const added = after.sets.filter((s) => !have.sets.has(s.name)).map((s) => s.name);
  t.ok(added.length > 0, `the move adds sets: ${added.join(', ')}`);
  for (const name of added) {
    t.ok(
      d.staged.some((c) =>
        c.startsWith(`add ${after.sets.find((s) => s.name === name)!.kind} inet egress_natd ${name} `),
      ),
      `${name} is staged`,
    );
    t.notOk(
      d.commands.some((c) => c.startsWith('add ') && c.includes(` ${name} `) && !c.startsWith('add rule')),
      `${name} is not made in the switch`,
    );
  }
  t.ok(
    d.commands.some((c) => c.startsWith('flush chain inet egress_natd postrouting')),
    'the switch replaces the rules',
  );
  const base = new Set(after.chains.filter((c) => c.hook).map((c) => c.name));
  t.notOk(
    d.staged.some((c) => base.has(c.split(' ')[4]!)),
    'no base chain is touched by the first',
  );
});

t.test('a big change is logged in a few lines, a small one line by line', async (t) => {
  const small = ['create table inet egress_natd', 'add map d_1 (50 elements)', 'replace chain prerouting (3 rules)'];
  t.same(shortSummary(small), small);
  const big = [
    'create table inet egress_natd',
    ...Array.from({ length: 2000 }, (_, i) => `add map d_${i} (50 elements)`),
    'add map s_1 (50002 elements)',
    'add set n_1 (1 elements)',
    'add chain prerouting (7 rules)',
    'replace chain postrouting (2 rules)',
    'delete map d_old',
  ];
  t.same(shortSummary(big), [
    'create table inet egress_natd',
    'add 2001 maps (150002 elements)',
    'add 1 set (1 elements)',
    'add 1 chain',
    'replace 1 chain',
    'delete 1 map',
  ]);
  t.equal(shortSummary(big.slice(0, SUMMARY_LINES)).length, SUMMARY_LINES, 'up to the limit, every line');
});
