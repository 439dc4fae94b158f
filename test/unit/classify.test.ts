import t from 'tap';
import { classify, type ClassifiablePolicy } from '../../src/plan/classify.js';
import { subtract, union } from '../../src/util/intervals.js';
import type { Range } from '../../src/util/ip.js';
import { rng } from '../helpers.js';

// The flat lookups must give exactly what first-match over the policy list gives.

const r = (start: number, end: number): Range => ({ family: 4, start: BigInt(start), end: BigInt(end) });

function lookup(c: ReturnType<typeof classify>, src: number, dst: number): number | undefined {
  const s = c.sources.find((e) => e.range.start <= BigInt(src) && BigInt(src) <= e.range.end);
  if (!s) return undefined;
  return c.classes[s.cls]!.destinations.find((d) => d.range.start <= BigInt(dst) && BigInt(dst) <= d.range.end)?.egress;
}

const inside = (rs: readonly Range[], v: number) => rs.some((x) => x.start <= BigInt(v) && BigInt(v) <= x.end);
const firstMatch = (ps: ClassifiablePolicy[], src: number, dst: number) =>
  ps.find((p) => inside(p.sources, src) && inside(p.destinations, dst))?.egress;

t.test('excluded destinations fall through to later policies', async (t) => {
  const ps: ClassifiablePolicy[] = [
    { index: 0, sources: [r(0, 99)], cgroups: [], destinations: subtract([r(1000, 1255)], [r(1008, 1008)]), egress: 1 },
    { index: 1, sources: [r(50, 149)], cgroups: [], destinations: [r(1000, 1255)], egress: 2 },
  ];
  const c = classify(ps);
  t.equal(lookup(c, 10, 1008), undefined, 'excluded, and no other policy covers the source');
  t.equal(lookup(c, 60, 1008), 2, 'excluded from the first, matched by the second');
  t.equal(lookup(c, 60, 1009), 1, 'the first in file order wins');
  t.equal(lookup(c, 120, 1009), 2);
  t.equal(lookup(c, 200, 1009), undefined, 'unselected source');
});

/** 1 to 8 policies with random, overlapping sources and destinations, each with an egress in 1..`egresses`. */
function randomPolicies(rand: () => number, egresses: number): ClassifiablePolicy[] {
  const ps: ClassifiablePolicy[] = [];
  const n = 1 + Math.floor(rand() * 8);
  for (let i = 0; i < n; i++) {
    const span = () => {
      const a = Math.floor(rand() * 200);
      return r(a, a + Math.floor(rand() * 60));
    };
    const dst = union([span(), span()]);
    ps.push({
      index: i,
      sources: union([span(), span()]),
      cgroups: [],
      destinations: subtract(dst, union([span()])),
      egress: 1 + Math.floor(rand() * egresses),
    });
  }
  return ps;
}

/**
 * 40 random policy sets, 400 random packets each: the first packet where the flat lookup
 * and `expected` (over the policies) disagree, or undefined.
 */
function mismatch(
  seed: number,
  egresses: number,
  expected: (ps: ClassifiablePolicy[], src: number, dst: number) => number | undefined,
): string | undefined {
  const rand = rng(seed);
  for (let round = 0; round < 40; round++) {
    const ps = randomPolicies(rand, egresses);
    const c = classify(ps);
    for (let k = 0; k < 400; k++) {
      const src = Math.floor(rand() * 270);
      const dst = Math.floor(rand() * 270);
      const [got, want] = [lookup(c, src, dst), expected(ps, src, dst)];
      if (got !== want) return `round ${round}: src ${src} dst ${dst}: ${got} vs ${want}`;
    }
  }
  return undefined;
}

t.test('random policies: flat lookups equal first match', async (t) => {
  t.equal(mismatch(42, 3, firstMatch), undefined, '40 random policy sets, 16000 packets');
});

t.test('cgroups: a socket in a child cgroup belongs to its configured ancestors', async (t) => {
  const ps: ClassifiablePolicy[] = [
    { index: 0, sources: [], cgroups: ['a/b/c'], destinations: [r(0, 10)], egress: 1 },
    { index: 1, sources: [], cgroups: ['a'], destinations: [r(0, 20)], egress: 2 },
  ];
  const c = classify(ps);
  const abc = c.cgroups.find((g) => g.path === 'a/b/c')!;
  const a = c.cgroups.find((g) => g.path === 'a')!;
  t.equal(abc.level, 3);
  t.equal(a.level, 1);
  t.same(
    c.classes[abc.cls]!.destinations.map((d) => [Number(d.range.start), Number(d.range.end), d.egress]),
    [
      [0, 10, 1],
      [11, 20, 2],
    ],
  );
  t.same(
    c.classes[a.cls]!.destinations.map((d) => [Number(d.range.start), Number(d.range.end), d.egress]),
    [[0, 20, 2]],
  );
});

t.test('identical classes share one lookup', async (t) => {
  // Policy 0 covers every source and destination of the others: it wins everywhere, so
  // the 50 different policy sets classify identically.
  const ps: ClassifiablePolicy[] = Array.from({ length: 50 }, (_, i) => ({
    index: i,
    sources: i === 0 ? [r(0, 1000)] : [r(i * 10, i * 10 + 5)],
    cgroups: [],
    destinations: [r(1000, 2000)],
    egress: 1,
  }));
  t.equal(classify(ps).classes.length, 1);
});

t.test('each destination range names the policy that matches it (its counter counts it)', async (t) => {
  const ps: ClassifiablePolicy[] = [
    { index: 0, sources: [r(0, 10)], cgroups: [], destinations: [r(100, 199)], egress: 1 },
    { index: 1, sources: [r(0, 10)], cgroups: [], destinations: [r(200, 299)], egress: 1 },
    { index: 2, sources: [r(20, 30)], cgroups: [], destinations: [r(100, 199)], egress: 1 },
  ];
  const { classes, sources } = classify(ps);
  const of = (src: number) =>
    classes[sources.find((s) => s.range.start <= BigInt(src) && BigInt(src) <= s.range.end)!.cls]!;
  t.same(
    of(5).destinations.map((d) => [Number(d.range.start), Number(d.range.end), d.policy]),
    [
      [100, 199, 0],
      [200, 299, 1],
    ],
    'adjacent ranges of one egress stay apart when their policies differ',
  );
  t.same(
    of(25).destinations.map((d) => d.policy),
    [2],
  );
  t.equal(classes.length, 2, 'the same destinations of another policy are another lookup');
});

// The relay guard (src/plan/relay.ts) classifies the policies of one floating IP: with one
// egress, first match is the union over the policies, each with its own destinations.
t.test('policies of one egress: a packet matches iff one policy has its source and destination', async (t) => {
  const some = (ps: ClassifiablePolicy[], src: number, dst: number) =>
    ps.some((p) => inside(p.sources, src) && inside(p.destinations, dst)) ? 1 : undefined;
  t.equal(mismatch(7, 1, some), undefined, '40 random policy sets, 16000 packets');
});
