import type { Config } from '../config/model.js';
import type { Address } from '../util/ip.js';
import { egressChain, egressIPCounter, MACVLAN_PREFIX, policyChain, policyCounter } from './naming.js';
import { makeCounter, makeSet, type ChainHook, type NftChainSpec, type NftSetSpec } from './nft.js';

// What flows, counted by the kernel in named counters (docs/datapath.md, "Counters"):
// reading them is one netlink dump, never a walk of conntrack. They depend on the config
// alone, so every node has the same ones whoever owns what, and they keep counting
// across changes of the plan (a named counter has no content to change).

export interface CountedIP {
  readonly ip: Address;
  readonly text: string;
  readonly index: number;
}

export interface TrafficCounters {
  /** The counters first (the maps that name them must come after them in a transaction), then the maps. */
  readonly sets: readonly NftSetSpec[];
  /** One chain per policy, and the postrouting chain that counts per floating IP. */
  readonly chains: readonly NftChainSpec[];
  /** An egress chain with its noGateway drop counted in its IP's named counter. */
  readonly nameDropCounter: (chain: NftChainSpec) => NftChainSpec;
}

/** After SNAT (srcnat, 100) and after any filter that drops what must not leave (srcnat + 10): it counts what leaves. */
export const COUNT_HOOK: ChainHook = {
  type: 'filter',
  hook: 'postrouting',
  prio: 120,
  prioText: 'srcnat + 20',
  policy: 'accept',
};

/**
 * @param egressOf the mark index of each policy's floating IP, by the policy's position
 */
export function trafficCounters(
  config: Config,
  fips: readonly CountedIP[],
  egressOf: readonly number[],
): TrafficCounters {
  const counters = [
    ...fips.flatMap((f) => (['out', 'new', 'nogw'] as const).map((w) => makeCounter(egressIPCounter(f.ip, w)))),
    ...config.policies.map((p) => makeCounter(policyCounter(p.name))),
  ];
  const bySource = (what: 'out' | 'new', prefix: string) =>
    makeSet(
      prefix,
      'map',
      'type ipv4_addr : counter;',
      fips.map((f) => `${f.text} : "${egressIPCounter(f.ip, what)}"`),
    );
  const out = bySource('out', 'co');
  const started = bySource('new', 'cn');
  // Traffic relayed to this host's floating IPs went through a policy's chain on its
  // source host already: the owner sends it there too (the relay guard) but must not count it twice.
  const policies = config.policies.map((p, i): NftChainSpec => ({
    name: policyChain(i),
    rules: [
      `iifname != "${MACVLAN_PREFIX}*" counter name "${policyCounter(p.name)}"`,
      `goto ${egressChain(egressOf[i]!)}`,
    ],
  }));
  // The source after SNAT is the floating IP: packets and bytes per IP, and the first
  // packet of each connection (its conntrack entry is confirmed only after postrouting).
  const count: NftChainSpec = {
    name: 'count',
    hook: COUNT_HOOK,
    rules: fips.length
      ? [`counter name ip saddr map @${out.name}`, `ct state new counter name ip saddr map @${started.name}`]
      : [],
  };
  const byChain = new Map(fips.map((f) => [egressChain(f.index), f.ip]));
  return {
    sets: [...counters, ...(fips.length ? [out, started] : [])],
    chains: [...policies, count],
    // The egress chain of an IP without owner drops with an anonymous counter; the named
    // one is the same drop, readable per IP without listing the ruleset.
    nameDropCounter: (chain) => {
      const ip = byChain.get(chain.name);
      if (!ip) return chain;
      const named = `counter name "${egressIPCounter(ip, 'nogw')}" drop`;
      return { ...chain, rules: chain.rules.map((r) => (r === 'counter drop' ? named : r)) };
    },
  };
}
