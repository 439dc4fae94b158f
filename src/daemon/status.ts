import { nodeNamed, policySourcesOn, type Config } from '../config/model.js';
import { outvoted } from '../cluster/membership.js';
import { formatCidr, formatAddress } from '../util/ip.js';
import { policyStates, type PolicyState } from './policy-state.js';
import type { Traffic } from './traffic.js';

// What `status` and `egress list` show: pure functions of the config and the daemon's
// view, so the CLI, tests and logs all read the same thing.

export interface NodeStatus {
  readonly state: 'Up' | 'Down';
  readonly eligible: boolean;
  readonly draining: boolean;
  readonly carrier: boolean;
  readonly digest?: string;
  readonly holds: readonly string[];
  /** Alive but its heartbeats fail authentication (another cluster key?). */
  readonly authFailing?: boolean;
}

export interface View {
  readonly self: string;
  readonly nodes: ReadonlyMap<string, NodeStatus>;
  /** floating IP → elected owner. */
  readonly owners: ReadonlyMap<string, string>;
}

export interface Status {
  readonly node: string;
  readonly nodes: Record<string, 'Up' | 'Down'>;
  readonly floatingIPs: Record<string, string | null>;
  /** Each policy's state (Active, NoGateway, Invalid) and why. */
  readonly policies: Record<string, PolicyState>;
  readonly configDigests: Record<string, string | null>;
  readonly details: Record<string, Omit<NodeStatus, 'digest'>>;
  /** Configured peers whose heartbeats fail authentication, and whether they outvote this node. */
  readonly authentication: Authentication;
  readonly [extra: string]: unknown;
}

export function status(config: Config, view: View): Status {
  const nodes: Status['nodes'] = {};
  const digests: Status['configDigests'] = {};
  const details: Status['details'] = {};
  for (const n of config.nodes) {
    const s = view.nodes.get(n.name);
    nodes[n.name] = s?.state ?? 'Down';
    digests[n.name] = s?.digest ?? null;
    if (s)
      details[n.name] = {
        state: s.state,
        eligible: s.eligible,
        draining: s.draining,
        carrier: s.carrier,
        holds: s.holds,
        authFailing: s.authFailing ?? false,
      };
  }
  const floatingIPs: Status['floatingIPs'] = {};
  for (const g of config.gateways)
    for (const ip of g.floatingIPs) floatingIPs[formatAddress(ip)] = view.owners.get(formatAddress(ip)) ?? null;
  return {
    node: view.self,
    nodes,
    floatingIPs,
    policies: policyStates(config, view),
    configDigests: digests,
    details,
    authentication: authentication(view),
  };
}

export interface Authentication {
  /** Configured peers alive but unverified, sorted. */
  readonly failing: readonly string[];
  /** More of them than peers Up: this node takes no floating IP it does not hold. */
  readonly outvoted: boolean;
}

/** Who fails authentication, from the view (the rule is membership's `outvoted`). */
export function authentication(view: View): Authentication {
  const peers = [...view.nodes].filter(([name]) => name !== view.self);
  const failing = peers
    .filter(([, s]) => s.authFailing)
    .map(([name]) => name)
    .sort();
  const up = peers.filter(([, s]) => s.state === 'Up').length;
  return { failing, outvoted: outvoted(failing.length, up) };
}

export interface EgressRow {
  readonly source: string;
  readonly destination: string;
  readonly egressIP: string;
  readonly gateway: string;
  readonly policy: string;
  /** What this node's own sources sent into the policy (all its rows), when the counters could be read. */
  readonly packets?: number;
  readonly bytes?: number;
}

/**
 * One row per (source, destination) of every policy, as this node steers it (like
 * `cilium-dbg bpf egress list`), with the policy's counters on this node if given.
 */
export function egressList(config: Config, view: View, counted?: Traffic): EgressRow[] {
  const self = nodeNamed(config, view.self);
  const rows: EgressRow[] = [];
  for (const p of config.policies) {
    const sources = policySourcesOn(config, p, self).matches.flatMap((m) => [
      ...m.cidrs.map(formatCidr),
      ...m.cgroups.map((c) => `cgroup:${c}`),
    ]);
    const ip = formatAddress(p.egressIP);
    const gateway = view.owners.get(ip) ?? '(none)';
    const destinations = [...p.destinations.map(formatCidr), ...p.excludedDestinations.map((d) => `!${formatCidr(d)}`)];
    const c = counted?.policies[p.name];
    const counts = c ? { packets: c.packets, bytes: c.bytes } : {};
    for (const source of [...new Set(sources)])
      for (const destination of destinations)
        rows.push({ source, destination, egressIP: ip, gateway, policy: p.name, ...counts });
  }
  return rows;
}

export interface SelfState {
  readonly ready: boolean;
  readonly draining: boolean;
  readonly carrier: boolean;
}

/** systemd's STATUS=: one line that says what this node does, e.g. "owner of 192.168.1.100; 3/3 nodes up". */
export function statusLine(config: Config, view: View, self: SelfState): string {
  const holds = view.nodes.get(view.self)?.holds ?? [];
  const up = config.nodes.filter((n) => view.nodes.get(n.name)?.state === 'Up').length;
  const what = !self.carrier
    ? 'no carrier, owns nothing'
    : !self.ready
      ? 'listening before taking part'
      : holds.length
        ? `owner of ${holds.join(', ')}`
        : 'standby, owns no floating IP';
  const drift = configDrift(view);
  const auth = authentication(view);
  return [
    `${what}${self.draining ? ' (draining)' : ''}`,
    `${up}/${config.nodes.length} nodes up`,
    ...(auth.failing.length ? [`authentication fails for ${auth.failing.join(', ')} (another cluster key?)`] : []),
    ...(auth.outvoted ? ['taking no IP: more peers fail authentication than pass (is the key here wrong?)'] : []),
    ...(drift.length ? [`config differs on ${drift.map((d) => d.node).join(', ')}`] : []),
  ].join('; ');
}

/** Nodes that are Up with a config digest other than this node's. */
export function configDrift(view: View): { node: string; digest: string }[] {
  const own = view.nodes.get(view.self)?.digest;
  return [...view.nodes]
    .filter(([name, s]) => name !== view.self && s.state === 'Up' && s.digest !== undefined && s.digest !== own)
    .map(([node, s]) => ({ node, digest: s.digest! }))
    .sort((a, b) => (a.node < b.node ? -1 : 1)); // not localeCompare: the same order everywhere, and no ICU data
}
