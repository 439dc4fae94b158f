import { cidrRange, type Cidr, type Range } from './ip.js';

// Sorted, disjoint, non-adjacent-merged lists of ranges of one family.

export function union(ranges: readonly Range[]): Range[] {
  const sorted = [...ranges].sort(
    (a, b) => a.family - b.family || (a.start < b.start ? -1 : a.start > b.start ? 1 : 0),
  );
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last.family === r.family && r.start <= last.end + 1n) {
      if (r.end > last.end) out[out.length - 1] = { ...last, end: r.end };
    } else out.push(r);
  }
  return out;
}

export const unionOfCidrs = (cidrs: readonly Cidr[]): Range[] => union(cidrs.map(cidrRange));

/** a minus b; both sorted and disjoint (as union() returns). */
export function subtract(a: readonly Range[], b: readonly Range[]): Range[] {
  const out: Range[] = [];
  let j = 0;
  for (const r of a) {
    let start = r.start;
    while (j < b.length && (b[j]!.family < r.family || (b[j]!.family === r.family && b[j]!.end < start))) j++;
    let k = j;
    while (start <= r.end) {
      const cut = b[k];
      if (!cut || cut.family !== r.family || cut.start > r.end) {
        out.push({ family: r.family, start, end: r.end });
        break;
      }
      if (cut.start > start) out.push({ family: r.family, start, end: cut.start - 1n });
      start = cut.end + 1n;
      k++;
    }
  }
  return out;
}

/** Whether two sorted disjoint lists share any address. */
export function intersects(a: readonly Range[], b: readonly Range[]): boolean {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const x = a[i]!;
    const y = b[j]!;
    if (x.family !== y.family) {
      if (x.family < y.family) i++;
      else j++;
    } else if (x.end < y.start) i++;
    else if (y.end < x.start) j++;
    else return true;
  }
  return false;
}

/**
 * Pairs (i < j) of owners whose range lists overlap, by one sweep over all ranges.
 * Cost grows with the ranges and the overlapping pairs, not with owners squared.
 */
export function overlappingOwners(lists: readonly (readonly Range[])[]): Set<string> {
  const all = lists.flatMap((rs, owner) => rs.map((r) => ({ r, owner })));
  all.sort((a, b) => a.r.family - b.r.family || (a.r.start < b.r.start ? -1 : a.r.start > b.r.start ? 1 : 0));
  const pairs = new Set<string>();
  const active: { r: Range; owner: number }[] = [];
  for (const cur of all) {
    // Those still open at cur, kept in place: one array for the whole sweep.
    let open = 0;
    for (const a of active) if (a.r.family === cur.r.family && a.r.end >= cur.r.start) active[open++] = a;
    active.length = open;
    for (const a of active) {
      if (a.owner !== cur.owner) {
        const [i, j] = a.owner < cur.owner ? [a.owner, cur.owner] : [cur.owner, a.owner];
        pairs.add(`${i},${j}`);
      }
    }
    active.push(cur);
  }
  return pairs;
}
