import t from 'tap';
import { diffTable } from '../../src/dataplane/nftdiff.js';
import { plan } from '../../src/plan/desired.js';
import { ruleComment, renderTable } from '../../src/plan/nft.js';
import { parseAddress } from '../../src/util/ip.js';
import { loadValid } from '../helpers.js';

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
  t.match(renderTable(source.nft), /chain egress_2 \{\n\t\tcounter drop/);

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
  t.equal(empty.commands[0], 'add table inet egress_natd');
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
  t.same(diffTable(want, same).commands, [], 'nothing differs, nothing to do');

  // The owner changes: only the per-IP chain and the postrouting maps change; the classification stays.
  const moved = plan(config, 'worker1', owners({ '192.168.1.100': 'worker1' })).nft;
  const d = diffTable(moved, same);
  t.notOk(
    d.commands.some((c) => /add map inet egress_natd [sd]_/.test(c)),
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
