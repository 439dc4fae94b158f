import { createHash } from 'node:crypto';
import type { Config, NodeSpec } from '../config/model.js';
import { candidates, floatingIPs } from '../plan/desired.js';

// Who owns each floating IP (docs/design.md, "Election rules"): a pure function of the config, the live
// nodes and the current claims, so every host that has the same view computes the same
// owners, whatever order it learned things in.

export interface LiveNode {
  readonly name: string;
  /** Up, ready, carrier, not draining, not leaving: may take floating IPs. */
  readonly eligible: boolean;
  /** Draining but still serving: keeps what it holds while no eligible node can take it. */
  readonly mayKeep?: boolean;
  /**
   * Up, still listening before it takes part (at most one Down interval). It is a
   * candidate for unowned IPs, so a cold-started cluster spreads its IPs instead of the
   * first node to finish listening taking them all; such an IP waits for it.
   */
  readonly joining?: boolean;
}

export interface Claim {
  readonly ip: string;
  readonly node: string;
}

export type Reason = 'kept' | 'conflict' | 'assigned' | 'kept-draining' | 'no-candidate';

export interface Election {
  /** floating IP → owner; an IP without a live candidate is absent. */
  readonly owners: ReadonlyMap<string, string>;
  /** Why each IP has its owner (or none): logged on every change. */
  readonly reasons: ReadonlyMap<string, Reason>;
}

/** The deterministic tie-break (rule 6): a hash of IP and node, never arrival order. */
export function tieBreak(ip: string, node: string): string {
  return createHash('sha256').update(`${ip}\0${node}`).digest('hex');
}

const workerFirst = (a: NodeSpec, b: NodeSpec): number => Number(a.role !== 'worker') - Number(b.role !== 'worker');

function best(ip: string, nodes: readonly NodeSpec[]): NodeSpec {
  return [...nodes].sort((a, b) => workerFirst(a, b) || (tieBreak(ip, a.name) < tieBreak(ip, b.name) ? -1 : 1))[0]!;
}

interface Pending {
  readonly ip: string;
  /** Eligible candidates of the best role present (rule 3). */
  readonly nodes: readonly string[];
}

/**
 * Spreads unowned IPs over their candidates so that the most loaded node carries as few
 * IPs as possible (rule 4), given the IPs that stay where they are (rule 5).
 * Greedy first (most constrained IP first, least loaded node, tie-break), then
 * cost-reducing paths: move IPs along a chain ending at a node with at least two fewer
 * IPs than the start. No such path left means the assignment is optimal (Harvey et al.,
 * "Semi-matchings for bipartite graphs and load balancing", 2003).
 */
function spread(pending: readonly Pending[], load: Map<string, number>): Map<string, string> {
  const owner = new Map<string, string>();
  const rank = (ip: string, n: string): [number, string] => [load.get(n) ?? 0, tieBreak(ip, n)];
  const order = [...pending].sort((a, b) => a.nodes.length - b.nodes.length || (a.ip < b.ip ? -1 : 1));
  for (const p of order) {
    const pick = [...p.nodes].sort((a, b) => {
      const [la, ta] = rank(p.ip, a);
      const [lb, tb] = rank(p.ip, b);
      return la - lb || (ta < tb ? -1 : 1);
    })[0]!;
    owner.set(p.ip, pick);
    load.set(pick, (load.get(pick) ?? 0) + 1);
  }
  const movable = new Map(pending.map((p) => [p.ip, p.nodes]));
  for (let path = costReducingPath(owner, movable, load); path; path = costReducingPath(owner, movable, load)) {
    for (const [ip, to] of path.moves) owner.set(ip, to);
    load.set(path.from, load.get(path.from)! - 1);
    load.set(path.to, (load.get(path.to) ?? 0) + 1);
  }
  return owner;
}

interface Path {
  readonly from: string;
  readonly to: string;
  /** (ip, new owner) moves, from the start of the chain to its end. */
  readonly moves: readonly [string, string][];
}

/** Breadth-first from the most loaded nodes, over IPs that may move, to a node with ≥ 2 fewer IPs. */
function costReducingPath(
  owner: Map<string, string>,
  movable: Map<string, readonly string[]>,
  load: Map<string, number>,
): Path | undefined {
  const held = new Map<string, string[]>();
  for (const [ip, n] of [...owner].sort(([a], [b]) => (a < b ? -1 : 1))) held.set(n, [...(held.get(n) ?? []), ip]);
  const sources = [...held.keys()].sort((a, b) => load.get(b)! - load.get(a)! || (a < b ? -1 : 1));
  for (const from of sources) {
    const fromLoad = load.get(from)!;
    const via = new Map<string, [ip: string, prev: string] | null>([[from, null]]);
    const queue = [from];
    while (queue.length) {
      const u = queue.shift()!;
      for (const ip of held.get(u) ?? []) {
        for (const v of movable.get(ip)!) {
          if (via.has(v)) continue;
          via.set(v, [ip, u]);
          if ((load.get(v) ?? 0) <= fromLoad - 2) {
            const moves: [string, string][] = [];
            for (let at = v, step = via.get(at); step; at = step[1], step = via.get(at)) moves.unshift([step[0], at]);
            return { from, to: v, moves };
          }
          queue.push(v);
        }
      }
    }
  }
  return undefined;
}

/**
 * The owners of every floating IP given the live nodes (those whose heartbeats arrive,
 * and this host) and the IPs they claim to hold. Claims of nodes that are not live or
 * not candidates of the IP are ignored.
 */
export function elect(config: Config, live: readonly LiveNode[], claims: readonly Claim[]): Election {
  const byName = new Map(live.map((n) => [n.name, n]));
  const owners = new Map<string, string>();
  const reasons = new Map<string, Reason>();
  const load = new Map<string, number>();
  const pending: Pending[] = [];
  const fips = floatingIPs(config);
  const take = (ip: string, node: string, reason: Reason) => {
    owners.set(ip, node);
    reasons.set(ip, reason);
    load.set(node, (load.get(node) ?? 0) + 1);
  };
  for (const fip of fips) {
    const cands = candidates(config, fip).filter((n) => byName.has(n.name)); // rule 1 and alive
    const eligible = cands.filter((n) => byName.get(n.name)!.eligible); // rule 2
    const claimants = new Set(claims.filter((c) => c.ip === fip.text).map((c) => c.node));
    const holding = eligible.filter((n) => claimants.has(n.name));
    if (holding.length) {
      take(fip.text, best(fip.text, holding).name, holding.length > 1 ? 'conflict' : 'kept'); // rule 5
      continue;
    }
    if (eligible.length) {
      const able = cands.filter((n) => byName.get(n.name)!.eligible || byName.get(n.name)!.joining);
      const workers = able.filter((n) => n.role === 'worker'); // rule 3
      pending.push({ ip: fip.text, nodes: (workers.length ? workers : able).map((n) => n.name).sort() });
      continue;
    }
    const keeping = cands.filter((n) => claimants.has(n.name) && byName.get(n.name)!.mayKeep);
    if (keeping.length) take(fip.text, best(fip.text, keeping).name, 'kept-draining');
    else reasons.set(fip.text, 'no-candidate');
  }
  for (const [ip, node] of spread(pending, load)) {
    owners.set(ip, node);
    reasons.set(ip, 'assigned');
  }
  // Map iteration order follows the config, not the order of assignment.
  const ordered = new Map(fips.filter((f) => owners.has(f.text)).map((f) => [f.text, owners.get(f.text)!]));
  return { owners: ordered, reasons };
}
