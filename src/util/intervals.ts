import { cidrRange, type Cidr, type Family, type Range } from './ip.js';

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

/** IPv4 sorts as numbers (address × INDEXES + index) while the indexes fit: exact below 2^53. */
const INDEXES = 2 ** 20;

/**
 * The indexes 0..count-1 in order of (family, address). The sweeps over 100,000 CIDRs spend
 * most of their time here: IPv4 sorts as a typed array, with no object or comparator call
 * per item; IPv6 with a comparator.
 */
export function addressOrder(
  count: number,
  family: (i: number) => Family,
  address: (i: number) => bigint,
): ArrayLike<number> {
  const indexes = Array.from({ length: count }, (_, i) => i);
  if (count <= INDEXES && indexes.every((i) => family(i) === 4)) {
    const keys = new Float64Array(count);
    for (let i = 0; i < count; i++) keys[i] = Number(address(i)) * INDEXES + i;
    return keys.sort().map((k) => k % INDEXES);
  }
  return indexes.sort((i, j) => {
    const a = address(i);
    const b = address(j);
    return family(i) - family(j) || (a < b ? -1 : a > b ? 1 : 0);
  });
}

/**
 * Pairs (i < j) of owners whose range lists overlap, by one sweep over all ranges.
 * Cost grows with the ranges and the overlapping pairs, not with owners squared.
 */
export function overlappingOwners(lists: readonly (readonly Range[])[]): Set<string> {
  const all = lists.flatMap((rs, owner) => rs.map((r) => ({ r, owner })));
  const order = addressOrder(
    all.length,
    (i) => all[i]!.r.family,
    (i) => all[i]!.r.start,
  );
  const pairs = new Set<string>();
  const active: { r: Range; owner: number }[] = [];
  for (let k = 0; k < order.length; k++) {
    const cur = all[order[k]!]!;
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
