import t from 'tap';
import { randomInt } from 'node:crypto';
import { Checker, type ChaosEvent, type Sample } from '../../lab/chaos-check.js';
import { runChaos } from '../../lab/chaos.js';
import { INVARIANTS, reportMarkdown } from '../../lab/chaos-report.js';

// The chaos soak (lab/chaos.ts) for two minutes: random faults, continuous traffic, every
// invariant checked all the time; `make chaos` runs the same for longer. First, the judge
// on made-up histories: each check must fire when its invariant breaks, and only then.

const HOSTS = ['h1', 'h2', 'h3'];
const IP = '192.168.1.100';

function judge(history: (ChaosEvent | Sample)[]): string[] {
  const c = new Checker({
    hosts: HOSTS,
    candidates: { [IP]: HOSTS },
    workers: HOSTS,
    doubleBoundMs: 300,
    ownerBoundMs: 600,
    joinMaxMs: 3000,
  });
  for (const x of history) {
    if ('holders' in x) c.sample(x);
    else c.event(x);
  }
  return c.violations.map((v) => v.kind);
}

/** Samples every 100 ms from `from` to `to` (ms), 10 ms long, with these holders of IP. */
const samples = (from: number, to: number, holders: string[]): Sample[] =>
  Array.from({ length: Math.floor((to - from) / 100) + 1 }, (_, i) => ({
    t0: from + i * 100,
    t1: from + i * 100 + 10,
    holders: { [IP]: holders },
  }));

/** Every host started and READY at time 0. */
const up: ChaosEvent[] = HOSTS.flatMap((host) => [
  { t: 0, kind: 'started', host },
  { t: 0, kind: 'ready', host },
]);
const partition = (t: number): ChaosEvent => ({
  t,
  kind: 'block',
  id: 'p',
  pairs: [
    ['h1', 'h2'],
    ['h2', 'h1'],
    ['h1', 'h3'],
    ['h3', 'h1'],
  ],
  groups: [['h1'], ['h2', 'h3']],
});

t.test('the judge', async (t) => {
  t.same(judge([...up, ...samples(1000, 5000, ['h1'])]), [], 'one holder: nothing to say');
  t.same(judge([...up, ...samples(1000, 2000, ['h1', 'h2'])]), ['two-holders'], 'two connected holders for 1 s');
  t.same(judge([...up, ...samples(1000, 1200, ['h1', 'h2'])]), [], 'a 200 ms overlap is a handover');
  t.same(
    judge([...up, partition(900), ...samples(1000, 3000, ['h1', 'h2']), { t: 3050, kind: 'unblock', id: 'p' }]),
    [],
    'both sides of a partition hold the IP',
  );
  t.same(
    judge([
      ...up,
      partition(900),
      ...samples(1000, 3000, ['h1', 'h2']),
      { t: 3050, kind: 'unblock', id: 'p' },
      ...samples(3100, 4000, ['h1', 'h2']),
    ]),
    ['two-holders'],
    'and must settle on one after the heal',
  );
  t.same(judge([...up, ...samples(1000, 3000, [])]), ['no-owner'], 'nobody holds the IP though all are eligible');
  t.same(
    judge([
      ...up,
      { t: 900, kind: 'stopped', host: 'h1' },
      ...samples(1000, 1400, ['h1']),
      ...samples(1500, 1900, ['h2']),
    ]),
    [],
    'a failover within the bound',
  );
  t.same(
    judge([
      ...HOSTS.flatMap((host): ChaosEvent[] => [
        { t: 0, kind: 'started', host },
        { t: 100, kind: 'listening', host },
      ]),
      { t: 200, kind: 'ready', host: 'h1' },
      ...samples(1000, 2000, []),
    ]),
    [],
    'an IP may wait for a joining candidate',
  );
  t.same(
    judge([...up, { t: 500, kind: 'block', id: 'o', pairs: [['h1', 'h2']] }, ...samples(1000, 3000, [])]),
    [],
    'groups are undefined under a one-way loss: not judged',
  );
  t.same(
    judge([
      ...up,
      { t: 500, kind: 'stopped', host: 'h3' },
      { t: 600, kind: 'released', host: 'h3' },
      ...samples(1000, 1100, ['h1', 'h3']),
    ]),
    ['held-without-daemon'],
    'an IP left on a host whose daemon is gone and released',
  );
});

t.test('two minutes of chaos', async (t) => {
  const seed = process.env.SEED ? Number(process.env.SEED) : randomInt(2 ** 31);
  t.comment(`seed ${seed} (SEED=${seed} repeats it)`);
  const report = await runChaos({ minutes: 2, seed });
  t.comment(reportMarkdown(report));
  t.ok(Object.values(report.faults).reduce((a, b) => a + b, 0) > 20, 'faults were injected');
  for (const [from, q] of Object.entries(report.requests)) t.ok(q.answered > 0, `${from} got answers`);
  for (const [kind, what] of INVARIANTS) t.equal(report.violations[kind]?.count ?? 0, 0, `no ${kind}: ${what}`);
  for (const kind of Object.keys(report.violations).filter((k) => !INVARIANTS.some(([i]) => i === k)))
    t.equal(report.violations[kind]!.count, 0, `no ${kind}`);
});
