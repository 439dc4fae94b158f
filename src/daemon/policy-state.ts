import { policySourcesOn, reachedDestinations, type Config, type Policy } from '../config/model.js';
import { candidates, floatingIPs } from '../plan/desired.js';
import { formatAddress } from '../util/ip.js';
import type { NodeStatus, View } from './status.js';

// Each policy's state, like a Kubernetes custom resource's status: one word to alert
// on and a reason a person can act on. Pure: the config and the daemon's view.

export const POLICY_STATES = ['Active', 'NoGateway', 'Invalid'] as const;
/**
 * - Active: its floating IP has an owner; its traffic leaves with the IP.
 * - NoGateway: nobody owns the IP now; its traffic gets cluster.noGateway (drop or masquerade).
 * - Invalid: the config can never make it flow: it selects no source, or it excludes all its destinations
 *   (both are valid config; `check` warns about a selector that matches no workload, and a floating IP
 *   no node may hold is an error of `check`, so it never gets here).
 */
export type PolicyStateName = (typeof POLICY_STATES)[number];

export interface PolicyState {
  readonly egressIP: string;
  /** The owner of its floating IP, as this node applied it; null when none. */
  readonly gateway: string | null;
  readonly state: PolicyStateName;
  /** Why, in words: e.g. "no live candidate for 192.168.1.101 (h1, h2 Down)". */
  readonly reason: string;
}

/** What stops a candidate that is Up from owning: its flags as heard. */
function whyNotEligible(s: NodeStatus): string {
  if (s.draining) return 'draining';
  if (!s.carrier) return 'no carrier';
  return 'not ready';
}

/** Why the config alone keeps this policy from ever flowing; undefined if it does not. */
function invalidReason(config: Config, policy: Policy): string | undefined {
  const { cidrs, cgroups } = policySourcesOn(config, policy);
  if (!cidrs.length && !cgroups.length) return 'it selects no source: its workloadSelector matches no workload';
  const destinations = reachedDestinations(policy);
  if (!destinations.length) return 'its excluded destinations cover all its destinations';
  return undefined;
}

/** What a policy's state depends on in the config alone: the same for every status of one config. */
interface PolicyFacts {
  readonly ip: string;
  readonly candidates: readonly string[];
  readonly invalid: string | undefined;
}

/**
 * Per config, computed once: with 1,000 policies, working these out on every `status` and
 * every scrape held the daemon's loop for 100 ms to over a second, and peers called it Down.
 */
const factsByConfig = new WeakMap<Config, ReadonlyMap<Policy, PolicyFacts>>();

function policyFacts(config: Config): ReadonlyMap<Policy, PolicyFacts> {
  let facts = factsByConfig.get(config);
  if (facts) return facts;
  const names = new Map(floatingIPs(config).map((f) => [f.text, candidates(config, f).map((n) => n.name)]));
  facts = new Map(
    config.policies.map((p) => {
      const ip = formatAddress(p.egressIP);
      return [p, { ip, candidates: names.get(ip) ?? [], invalid: invalidReason(config, p) }];
    }),
  );
  factsByConfig.set(config, facts);
  return facts;
}

function stateOf(config: Config, view: View, facts: PolicyFacts): PolicyState {
  const { ip, candidates: names, invalid } = facts;
  const owner = view.owners.get(ip) ?? null;
  const base = { egressIP: ip, gateway: owner };
  if (invalid) return { ...base, state: 'Invalid', reason: invalid };
  if (owner) return { ...base, state: 'Active', reason: `${ip} is held by ${owner}` };
  const then = `; its traffic is ${config.cluster.noGateway === 'drop' ? 'dropped' : 'masqueraded'} (noGateway)`;
  const up = names.filter((n) => view.nodes.get(n)?.state === 'Up');
  if (!up.length)
    return { ...base, state: 'NoGateway', reason: `no live candidate for ${ip} (${names.join(', ')} Down)${then}` };
  const blocked = up.filter((n) => !view.nodes.get(n)!.eligible);
  if (blocked.length === up.length) {
    const why = blocked.map((n) => `${n} ${whyNotEligible(view.nodes.get(n)!)}`).join(', ');
    return { ...base, state: 'NoGateway', reason: `no eligible candidate for ${ip} (${why})${then}` };
  }
  return { ...base, state: 'NoGateway', reason: `${ip} has no owner yet${then}` };
}

/** Every policy's state, by name, in file order. */
export function policyStates(config: Config, view: View): Record<string, PolicyState> {
  const facts = policyFacts(config);
  return Object.fromEntries(config.policies.map((p) => [p.name, stateOf(config, view, facts.get(p)!)]));
}
