import { policySourcesOn, type Config, type Policy } from '../config/model.js';
import { cidrRange, type Address, type Range } from '../util/ip.js';
import { union } from '../util/intervals.js';
import { classify, type ClassifiablePolicy, type SourceClass } from './classify.js';
import { macvlanName, RELAY_REASONS, relayChain, relayClassChain, relayCounter } from './naming.js';
import { destinationMap, makeCounter, makeSet, sourceMap, type NftChainSpec, type NftSetSpec } from './nft.js';

// The relay guard (docs/datapath.md, "The relay guard"): the owner of a floating IP
// forwards and SNATs what arrives on its macvlan, so without a check any host on the
// segment could route through it and leave with the IP. Per owned IP, a packet passes
// only if some policy of that IP has its source and, that same policy, its destination.
// The check depends on the config alone, never on which node owns the IP, so a new owner
// takes exactly what the old one took.

/**
 * Where a policy's traffic can reach its IP's owner from: its sources on any node, and the
 * address of every node that runs one of its cgroups (steered local processes leave their
 * node with the node's own address).
 */
export function relaySources(config: Config, policy: Policy): Range[] {
  const { cidrs, cgroups } = policySourcesOn(config, policy);
  const nodes = cgroups.length ? config.nodes.filter((n) => policySourcesOn(config, policy, n).cgroups.length) : [];
  const hosts = nodes.map((n): Range => ({ family: n.address.family, start: n.address.value, end: n.address.value }));
  return union([...cidrs.map(cidrRange), ...hosts]);
}

export interface OwnedIP {
  readonly ip: Address;
  /** Its mark index: the `egress` of the policies that use it. */
  readonly index: number;
}

export interface RelayGuard {
  readonly sets: readonly NftSetSpec[];
  readonly chains: readonly NftChainSpec[];
  /** The prerouting rule that sends what arrives on an owned IP's macvlan to its guard. */
  readonly dispatch?: string;
}

/**
 * The guard of every owned IP. `policies` are the host's classifiable policies (file
 * order, destinations minus exclusions); only their sources are replaced, by
 * relaySources(). A guard's classification holds policies of one IP only, so it is the
 * union over those policies, and its destination lookups are the same maps as the host's
 * own classification wherever the policy sets agree (maps are content-addressed; `mapOf`
 * returns the host's map for a class key it has rendered already).
 */
export function relayGuard(
  config: Config,
  policies: readonly ClassifiablePolicy[],
  owned: readonly OwnedIP[],
  mapOf: (c: SourceClass) => NftSetSpec = (c) => destinationMap(c.destinations),
): RelayGuard {
  if (!owned.length) return { sets: [], chains: [] };
  const sets: NftSetSpec[] = [];
  const chains: NftChainSpec[] = [];
  for (const { ip, index } of owned) {
    const mine = policies
      .filter((p) => p.egress === index)
      .map((p) => ({ ...p, sources: relaySources(config, config.policies[p.index]!), cgroups: [] }));
    const { classes, sources } = classify(mine);
    const [source, destination] = RELAY_REASONS.map((r) => relayCounter(ip, r));
    sets.push(makeCounter(source!), makeCounter(destination!));
    const classChain = classes.map((c) => {
      const map = mapOf(c);
      sets.push(map);
      // The map's verdict sets this IP's mark: harmless here, where the IP's table is empty.
      const name = relayClassChain(ip, map.name);
      chains.push({ name, rules: [`ip daddr vmap @${map.name}`, `counter name "${destination}" drop`] });
      return name;
    });
    const rules: string[] = [];
    if (sources.length) {
      const map = sourceMap('rs', sources, classChain);
      sets.push(map);
      rules.push(`ip saddr vmap @${map.name}`);
    }
    chains.push({ name: relayChain(ip), rules: [...rules, `counter name "${source}" drop`] });
  }
  const dispatch = makeSet(
    'rg',
    'map',
    'type ifname : verdict;',
    owned.map(({ ip }) => `"${macvlanName(ip)}" : goto ${relayChain(ip)}`),
  );
  sets.push(dispatch);
  // Only frames sent to the macvlan's MAC can be relayed; broadcasts and multicast (such
  // as heartbeats) are never forwarded, and counting them would be noise.
  return { sets, chains, dispatch: `meta pkttype host iifname vmap @${dispatch.name}` };
}
