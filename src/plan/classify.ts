import type { Range } from '../util/ip.js';
import { addressOrder } from '../util/intervals.js';

// Packet classification as flat lookups: whatever the number of policies, a packet
// costs one source lookup and one destination lookup. Policies are first-match in file
// order; a policy's excluded destinations let later policies match (they are already
// subtracted from `destinations`).

export interface ClassifiablePolicy {
  /** Position in the file: the lower index wins. */
  readonly index: number;
  readonly sources: readonly Range[];
  readonly cgroups: readonly string[];
  /** Sorted and disjoint: destinations minus excluded destinations. */
  readonly destinations: readonly Range[];
  /** Which floating IP the policy's traffic uses (its mark index). */
  readonly egress: number;
}

export interface DestinationRange {
  readonly range: Range;
  readonly egress: number;
  /** The policy that matches it (its index): lookups end in that policy's chain, which counts it. */
  readonly policy: number;
}

/** A source class: the destination lookup shared by every source with the same policies. */
export interface SourceClass {
  readonly destinations: readonly DestinationRange[];
  /** Its destinations as text: equal keys, equal lookups (also across classifications). */
  readonly key: string;
}

export interface Classification {
  /** class id → its destination lookup. Ids are positions; naming is the renderer's job. */
  readonly classes: readonly SourceClass[];
  readonly sources: readonly { range: Range; cls: number }[];
  readonly cgroups: readonly { path: string; level: number; cls: number }[];
}

/**
 * Sweeps labelled ranges and calls `segment` for every maximal run of addresses with
 * one fixed set of active owners (non-empty).
 */
function sweep<T>(
  labelled: readonly { range: Range; owner: T }[],
  segment: (r: Range, active: Map<T, number>) => void,
): void {
  const ranges = labelled.map((l) => l.range);
  const at: bigint[] = [];
  for (const r of ranges) at.push(r.start, r.end + 1n);
  // Edge 2i is where range i starts, 2i + 1 one past its end.
  const order = addressOrder(
    at.length,
    (e) => ranges[e >> 1]!.family,
    (e) => at[e]!,
  );
  const active = new Map<T, number>();
  for (let i = 0; i < order.length;) {
    const first = order[i]!;
    const family = ranges[first >> 1]!.family;
    const here = at[first]!;
    for (let e = first; i < order.length && ranges[e >> 1]!.family === family && at[e] === here; e = order[++i]!) {
      const { owner } = labelled[e >> 1]!;
      const n = (active.get(owner) ?? 0) + (e & 1 ? -1 : 1);
      if (n === 0) active.delete(owner);
      else active.set(owner, n);
    }
    const next = order[i];
    if (active.size > 0 && next !== undefined && ranges[next >> 1]!.family === family) {
      segment({ family, start: here, end: at[next]! - 1n }, active);
    }
  }
}

/** Appends `range` to `p`'s lookup, merged into the last range where the two touch and have the same policy. */
function append(out: DestinationRange[], range: Range, p: ClassifiablePolicy): void {
  const last = out[out.length - 1];
  if (last && last.policy === p.index && last.range.family === range.family && last.range.end + 1n === range.start) {
    out[out.length - 1] = { ...last, range: { ...last.range, end: range.end } };
  } else out.push({ range, egress: p.egress, policy: p.index });
}

/** First-match destination lookup for one ordered set of policies. */
function destinationsFor(policies: readonly ClassifiablePolicy[]): DestinationRange[] {
  const out: DestinationRange[] = [];
  // One policy (the class of most sources): its ranges are sorted and disjoint already.
  if (policies.length === 1) {
    for (const range of policies[0]!.destinations) append(out, range, policies[0]!);
    return out;
  }
  const labelled = policies.flatMap((p) => p.destinations.map((range) => ({ range, owner: p })));
  sweep(labelled, (range, active) => {
    let winner: ClassifiablePolicy | undefined;
    for (const p of active.keys()) if (!winner || p.index < winner.index) winner = p;
    append(out, range, winner!);
  });
  return out;
}

export function classify(policies: readonly ClassifiablePolicy[]): Classification {
  const classes: SourceClass[] = [];
  const byPolicies = new Map<string, number>();
  const byContent = new Map<string, number>();
  const classOf = (members: readonly ClassifiablePolicy[]): number | undefined => {
    // Most sources belong to one policy: its index is the key, with no array to sort.
    const policySet =
      members.length === 1
        ? String(members[0]!.index)
        : members
            .map((p) => p.index)
            .sort((a, b) => a - b)
            .join(',');
    const known = byPolicies.get(policySet);
    if (known !== undefined) return known;
    const destinations = destinationsFor(members);
    // Different policy sets can classify identically: share one lookup then.
    const content = destinations
      .map((d) => `${d.range.family}:${d.range.start}-${d.range.end}>${d.egress}/${d.policy}`)
      .join(' ');
    let id = byContent.get(content);
    if (id === undefined && destinations.length > 0) {
      id = classes.length;
      classes.push({ destinations, key: content });
      byContent.set(content, id);
    }
    if (id !== undefined) byPolicies.set(policySet, id);
    return id;
  };

  const sources: { range: Range; cls: number }[] = [];
  const labelled = policies.flatMap((p) => p.sources.map((range) => ({ range, owner: p })));
  sweep(labelled, (range, active) => {
    const cls = classOf([...active.keys()]);
    if (cls === undefined) return;
    const last = sources[sources.length - 1];
    if (last && last.cls === cls && last.range.family === range.family && last.range.end + 1n === range.start) {
      sources[sources.length - 1] = { cls, range: { ...last.range, end: range.end } };
    } else sources.push({ range, cls });
  });

  // A socket in cgroup a/b/c also belongs to a/b and a: its class covers every
  // configured ancestor, and the lookup tries the deepest level first.
  const paths = [...new Set(policies.flatMap((p) => p.cgroups))].sort();
  const cgroups = paths.flatMap((path) => {
    const members = policies.filter((p) => p.cgroups.some((c) => c === path || path.startsWith(`${c}/`)));
    const cls = classOf(members);
    return cls === undefined ? [] : [{ path, level: path.split('/').length, cls }];
  });
  return { classes, sources, cgroups };
}
