import {
  MAX_FLOATING_IPS,
  nodeNamed,
  policySourcesOn,
  reachedDestinations,
  selects,
  type Config,
  type NodeSpec,
  type Policy,
} from '../config/model.js';
import { cidrContains, formatAddress, type Address } from '../util/ip.js';
import { unionOfCidrs } from '../util/intervals.js';
import { classify, type ClassifiablePolicy, type SourceClass } from './classify.js';
import {
  egressChain,
  hex,
  MACVLAN_PREFIX,
  MARK_MASK,
  markOf,
  macvlanName,
  routeTableOf,
  rulePrefOf,
  virtualMac,
} from './naming.js';
import { destinationMap, makeSet, sourceMap, type NftChainSpec, type NftSetSpec, type NftTableSpec } from './nft.js';
import { trafficCounters } from './counters.js';
import { hostSourceRules } from './host-traffic.js';
import { relayGuard } from './relay.js';

/**
 * What this host does with one floating IP's traffic:
 * - local: it owns the IP and SNATs to it;
 * - remote: another host owns it; route marked traffic to the IP on-link;
 * - drop / masquerade: nobody owns it (cluster.noGateway).
 */
export type EgressMode = 'local' | 'remote' | 'drop' | 'masquerade';

export interface EgressState {
  readonly ip: string;
  readonly gateway: string;
  readonly index: number;
  readonly mark: number;
  readonly mode: EgressMode;
  readonly owner?: string;
}

export interface IpRule {
  readonly priority: number;
  readonly fwmark: number;
  readonly fwmask: number;
  readonly table: number;
}
export interface IpRoute {
  readonly table: number;
  readonly gateway: string;
  readonly dev: string;
}
export interface Macvlan {
  readonly name: string;
  readonly parent: string;
  readonly mac: string;
  readonly address: string;
  readonly sysctls: readonly Sysctl[];
}
export interface Sysctl {
  readonly path: string;
  readonly value: string;
}

export interface DesiredState {
  readonly node: string;
  readonly configDigest: string;
  readonly egress: readonly EgressState[];
  readonly nft: NftTableSpec;
  readonly rules: readonly IpRule[];
  readonly routes: readonly IpRoute[];
  readonly macvlans: readonly Macvlan[];
  /** Host settings egress-natd changes; `release` restores their earlier values. */
  readonly sysctls: readonly Sysctl[];
}

/** Facts about the host that the plan depends on. */
export interface HostFacts {
  /** cgroup paths that exist now; nft resolves cgroup paths when it loads rules. Undefined: assume all exist. */
  readonly cgroups?: ReadonlySet<string>;
  /**
   * Mark indexes the running daemon already uses (floating IP → index): IPs that stay keep
   * theirs, so a reload that inserts an IP does not renumber the marks, rules and tables
   * of IPs that carry traffic. Undefined: file order.
   */
  readonly indexes?: ReadonlyMap<string, number>;
}

export type Owners = ReadonlyMap<string, string>;

export interface FloatingIP {
  readonly ip: Address;
  readonly text: string;
  readonly gateway: string;
  readonly index: number;
}

/**
 * Every floating IP with its mark index, in file order: index 1 is the first, unless
 * `keep` gives an IP its index already; new IPs then take the lowest free indexes.
 */
export function floatingIPs(config: Config, keep?: ReadonlyMap<string, number>): FloatingIP[] {
  const all = config.gateways.flatMap((g) =>
    g.floatingIPs.map((ip) => ({ ip, text: formatAddress(ip), gateway: g.name })),
  );
  const used = new Set<number>();
  const kept = all.map((f) => {
    const k = keep?.get(f.text);
    if (k === undefined || k < 1 || k > MAX_FLOATING_IPS || used.has(k)) return undefined;
    used.add(k);
    return k;
  });
  let next = 1;
  return all.map((f, i) => {
    let index = kept[i];
    if (index === undefined) {
      while (used.has(next)) next++;
      index = next;
      used.add(index);
    }
    return { ...f, index };
  });
}

/** Nodes that may own a floating IP: admitted by its gateway and on its subnet (docs/design.md, "Election rules", rule 1). */
export function candidates(config: Config, fip: FloatingIP): NodeSpec[] {
  const gw = config.gateways.find((g) => g.name === fip.gateway)!;
  return config.nodes.filter((n) => selects(gw.nodeSelector, n.labels) && cidrContains(n.subnet, fip.ip));
}

const conf = (dev: string, setting: string): string => `net/ipv4/conf/${dev}/${setting}`;

function classifiable(
  config: Config,
  node: NodeSpec,
  policy: Policy,
  index: number,
  egress: number,
  facts: HostFacts,
): ClassifiablePolicy {
  const { cidrs, cgroups } = policySourcesOn(config, policy, node);
  return {
    index,
    sources: unionOfCidrs(cidrs),
    cgroups: cgroups.filter((c) => !facts.cgroups || facts.cgroups.has(c)),
    destinations: reachedDestinations(policy),
    egress,
  };
}

/** cgroups the config names for this node that `facts` says are missing (apply warns about them). */
export function missingCgroups(config: Config, nodeName: string, facts: HostFacts): string[] {
  const node = config.nodes.find((n) => n.name === nodeName);
  if (!node || !facts.cgroups) return [];
  const wanted = config.workloads.filter((w) => selects(w.nodeSelector, node.labels)).flatMap((w) => w.cgroups);
  return [...new Set(wanted)].filter((c) => !facts.cgroups!.has(c)).sort();
}

function nftTable(
  config: Config,
  node: NodeSpec,
  egress: readonly EgressState[],
  macvlans: readonly Macvlan[],
  facts: HostFacts,
): NftTableSpec {
  const fips = floatingIPs(config, facts.indexes);
  const indexOf = new Map(fips.map((f) => [f.text, f.index]));
  const policies = config.policies.map((p, i) =>
    classifiable(config, node, p, i, indexOf.get(formatAddress(p.egressIP))!, facts),
  );
  const { classes, sources, cgroups } = classify(policies);
  // What flows, counted per floating IP and per policy (docs/datapath.md, "Counters").
  const counted = trafficCounters(
    config,
    fips,
    policies.map((p) => p.egress),
  );

  const sets: NftSetSpec[] = [];
  const chains: NftChainSpec[] = [];
  // Rendering a map costs more than classifying: the relay guard reuses ours where its classes match.
  const maps = new Map<string, NftSetSpec>();
  const mapOf = (c: SourceClass): NftSetSpec => {
    let map = maps.get(c.key);
    if (!map) maps.set(c.key, (map = destinationMap(c.destinations)));
    return map;
  };
  const classChain = classes.map((c) => {
    const map = mapOf(c);
    sets.push(map);
    const name = `c${map.name.slice(1)}`;
    chains.push({ name, rules: [`ip daddr vmap @${map.name}`] });
    return name;
  });

  // What arrives on our macvlans (not for this host) passes the relay guard, and is not
  // steered again; the owner SNATs it in postrouting.
  const owned = fips.filter((f) => egress.some((e) => e.index === f.index && e.mode === 'local'));
  const guard = relayGuard(config, policies, owned, mapOf);
  const shared = new Set(sets.map((s) => s.name));
  sets.push(...guard.sets.filter((s) => !shared.has(s.name)));
  chains.push(...guard.chains);
  // A floating IP serves nothing: what reaches it for no connection this host tracks is
  // dropped, not answered. Right after a failover the server's next segments of a synced
  // connection can come before its entry is in (reconcile's stateFirst): dropped, they are
  // sent again; answered, a reset would end the connection. Pings still get an answer, and
  // this host's own processes still reach it (over lo).
  const unsolicited = owned.length
    ? [
        `iifname != "lo" ip daddr { ${owned.map((f) => f.text).join(', ')} } ct state new,invalid ip protocol != icmp counter drop`,
      ]
    : [];
  const prerouting = [...unsolicited, 'fib daddr type local return', ...(guard.dispatch ? [guard.dispatch] : [])];
  // Replies are never steered: they belong to connections opened toward this side (a
  // policy destination that connects to a workload), which no policy selects.
  prerouting.push('ct direction reply return', `iifname "${MACVLAN_PREFIX}*" return`);
  let sourceLookup: string | undefined;
  if (sources.length) {
    const map = sourceMap('s', sources, classChain);
    sets.push(map);
    prerouting.push(`ip saddr vmap @${map.name}`);
    sourceLookup = map.name;
  }
  const output = ['fib daddr type local return', 'ct direction reply return'];
  const levels = [...new Set(cgroups.map((c) => c.level))].sort((a, b) => b - a);
  for (const level of levels) {
    const entries = cgroups
      .filter((c) => c.level === level)
      .map((c) => `${JSON.stringify(c.path)} : goto ${classChain[c.cls]}`);
    const map = makeSet(`g${level}`, 'map', `typeof socket cgroupv2 level ${level} : verdict;`, entries);
    sets.push(map);
    output.push(`socket cgroupv2 level ${level} vmap @${map.name}`);
  }
  output.push(...hostSourceRules(node, sources, sourceLookup));

  const postrouting: string[] = [];
  const snatIif = macvlans.map((m) => `"${m.name}" : ${m.address}`);
  if (snatIif.length) {
    const map = makeSet('n', 'map', 'type ifname : ipv4_addr;', snatIif);
    sets.push(map);
    postrouting.push(`snat ip to iifname map @${map.name}`);
  }
  const local = egress.filter((e) => e.mode === 'local');
  if (local.length) {
    const map = makeSet(
      'm',
      'map',
      'type mark : ipv4_addr;',
      local.map((e) => `${hex(e.mark)} : ${e.ip}`),
    );
    sets.push(map);
    postrouting.push(`snat ip to meta mark & ${hex(MARK_MASK)} map @${map.name}`);
  }
  const masq = egress.filter((e) => e.mode === 'masquerade');
  if (masq.length) {
    const set = makeSet(
      'q',
      'set',
      'type mark;',
      masq.map((e) => hex(e.mark)),
    );
    sets.push(set);
    postrouting.push(`meta mark & ${hex(MARK_MASK)} @${set.name} masquerade`);
  }

  const setMark = (e: EgressState) => `meta mark set meta mark & ${hex(~MARK_MASK >>> 0)} | ${hex(e.mark)}`;
  // A connection this host starts tracking while it routes the IP's traffic elsewhere (or
  // masquerades it) is bound to that choice: NAT is decided on a connection's first packet.
  // Its conntrack mark names the IP, so that taking the IP over can flush exactly those.
  const trackMark = (e: EgressState) => `ct state new ct mark set ct mark & ${hex(~MARK_MASK >>> 0)} | ${hex(e.mark)}`;
  const egressChains = egress.map((e): NftChainSpec => ({
    name: egressChain(e.index),
    rules: e.mode === 'drop' ? ['counter drop'] : e.mode === 'local' ? [setMark(e)] : [trackMark(e), setMark(e)],
  }));
  // The last word before a selected packet leaves (after SNAT): with its floating IP as
  // source if this host owns the IP, toward the IP's owner if another does; anything else
  // is a leak, dropped and counted (docs/datapath.md, "The leak guard").
  const leakGuard = egress.flatMap((e) => {
    const marked = `meta mark & ${hex(MARK_MASK)} == ${hex(e.mark)}`;
    // Nor does anything else leave with an owned IP: a process of this host that binds it
    // (any local user can), or routed traffic no policy selected. Only what other hosts
    // steer here (arriving on the IP's macvlan) and this host's own selected traffic may.
    if (e.mode === 'local')
      return [
        `${marked} ip saddr != ${e.ip} counter drop`,
        `ip saddr ${e.ip} ct direction original meta mark & ${hex(MARK_MASK)} != ${hex(e.mark)} iifname != "${MACVLAN_PREFIX}*" counter drop`,
      ];
    if (e.mode === 'remote') return [`${marked} rt ip nexthop != ${e.ip} counter drop`];
    return [];
  });
  return {
    sets: [...sets, ...counted.sets],
    chains: [
      ...egressChains.map(counted.nameDropCounter),
      ...counted.chains,
      ...chains,
      {
        name: 'prerouting',
        hook: { type: 'filter', hook: 'prerouting', prio: -150, prioText: 'mangle', policy: 'accept' },
        rules: prerouting,
      },
      {
        name: 'output',
        hook: { type: 'route', hook: 'output', prio: -150, prioText: 'mangle', policy: 'accept' },
        rules: output,
      },
      {
        name: 'postrouting',
        hook: { type: 'nat', hook: 'postrouting', prio: 90, prioText: 'srcnat - 10', policy: 'accept' },
        rules: postrouting,
      },
      {
        name: 'leakguard',
        hook: { type: 'filter', hook: 'postrouting', prio: 110, prioText: 'srcnat + 10', policy: 'accept' },
        rules: leakGuard,
      },
    ],
  };
}

export class PlanError extends Error {}

/**
 * The complete data plane of `nodeName` given who owns each floating IP: a pure
 * function, so that the same inputs always give byte-identical output. Throws
 * UnknownNodeError for a node the config lacks, PlanError for owners that cannot be.
 */
export function plan(config: Config, nodeName: string, owners: Owners, facts: HostFacts = {}): DesiredState {
  const node = nodeNamed(config, nodeName);
  const fips = floatingIPs(config, facts.indexes);
  for (const [ip, owner] of owners) {
    const fip = fips.find((f) => f.text === ip);
    if (!fip) throw new PlanError(`${ip} is not a floating IP of any gateway`);
    if (!candidates(config, fip).some((n) => n.name === owner)) {
      throw new PlanError(
        `node "${owner}" cannot own ${ip}: it is not admitted by gateway "${fip.gateway}" or not on the IP's subnet`,
      );
    }
  }
  const egress = fips.map((f): EgressState => {
    const owner = owners.get(f.text);
    const mode: EgressMode = owner === undefined ? config.cluster.noGateway : owner === node.name ? 'local' : 'remote';
    return { ip: f.text, gateway: f.gateway, index: f.index, mark: markOf(f.index), mode, ...(owner ? { owner } : {}) };
  });
  const macvlans = fips
    .filter((f) => owners.get(f.text) === node.name)
    .map((f): Macvlan => {
      const name = macvlanName(f.ip);
      return {
        name,
        parent: node.interface,
        mac: virtualMac(f.ip),
        address: f.text,
        // Only the macvlan answers ARP for its IP, and it forwards what other hosts steer to it.
        sysctls: [
          { path: `net/ipv6/conf/${name}/disable_ipv6`, value: '1' },
          { path: conf(name, 'arp_ignore'), value: '1' },
          { path: conf(name, 'arp_announce'), value: '2' },
          { path: conf(name, 'arp_notify'), value: '1' },
          { path: conf(name, 'rp_filter'), value: '2' },
          { path: conf(name, 'forwarding'), value: '1' },
        ],
      };
    });
  const mayOwn = fips.some((f) => candidates(config, f).some((n) => n.name === node.name));
  return {
    node: node.name,
    configDigest: config.digest,
    egress,
    nft: nftTable(config, node, egress, macvlans, facts),
    rules: fips.map((f) => ({
      priority: rulePrefOf(f.index),
      fwmark: markOf(f.index),
      fwmask: MARK_MASK,
      table: routeTableOf(f.index),
    })),
    routes: egress
      .filter((e) => e.mode === 'remote')
      .map((e) => ({ table: routeTableOf(e.index), gateway: e.ip, dev: node.interface })),
    macvlans,
    // The parent must not answer ARP for the floating IPs its macvlans hold (ARP flux).
    sysctls: mayOwn
      ? [
          { path: conf(node.interface, 'arp_ignore'), value: '1' },
          { path: conf(node.interface, 'arp_announce'), value: '2' },
        ]
      : [],
  };
}
