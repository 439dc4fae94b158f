import t from 'tap';
import { FIPS, KEY, NAMES, Sim } from '../cluster-sim.js';
import { rng } from '../helpers.js';

// The handover rules in a simulated cluster (test/cluster-sim.ts): the invariants are
// checked at every step of the clock; these tests drive the events.

const report = (sim: Sim): string =>
  sim.violations
    .slice(0, 5)
    .map((v) => `t=${v.at}: ${v.what}`)
    .join('\n');

t.test('a cold start spreads the IPs, one holder each, no heartbeat rejected', async (t) => {
  const sim = new Sim(rng(1));
  for (const h of sim.hosts) h.start(0);
  sim.run(3000);
  t.same(sim.violations, [], 'no violation', { violations: report(sim) });
  const holders = FIPS.map((ip) => sim.holdersOf(ip));
  t.ok(
    holders.every((h) => h.length === 1),
    `one holder each: ${JSON.stringify(holders)}`,
  );
  t.equal(new Set(holders.flat()).size, 3, 'spread over the three workers');
  t.notOk(holders.flat().includes('n4'), 'the control-plane node holds nothing while workers can');
});

t.test('planned: drain, SIGTERM and restart never leave an IP unheld', async (t) => {
  const sim = new Sim(rng(2));
  for (const h of sim.hosts) h.start(0);
  sim.run(3000);
  for (let round = 0; round < 6; round++) {
    const [holder] = sim.holdersOf(FIPS[round % FIPS.length]!);
    t.ok(holder, `round ${round}: the IP has a holder`);
    const h = sim.host(holder!);
    if (round % 2 === 0) {
      h.drain(sim.now, true);
      sim.run(1000);
      t.notOk(
        FIPS.some((ip) => sim.holdersOf(ip).includes(h.name)),
        `drained ${h.name} holds nothing`,
      );
      h.drain(sim.now, false);
    } else {
      h.stop(sim.now);
      sim.run(1000);
      t.notOk(h.running, `${h.name} stopped`);
      h.start(sim.now);
    }
    sim.run(3000);
  }
  t.same(sim.violations, [], 'no violation', { violations: report(sim) });
});

t.test('random faults and planned events, several seeds', async (t) => {
  for (const seed of process.env['SIM_SEED'] ? [Number(process.env['SIM_SEED'])] : [11, 12, 13, 14, 15]) {
    const rand = rng(seed);
    const sim = new Sim(rand);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    for (const h of sim.hosts) h.start(Math.floor(rand() * 500));
    sim.run(3000);
    const events: string[] = [];
    for (let i = 0; i < 60; i++) {
      const h = pick(sim.hosts);
      const r = rand();
      if (r < 0.12 && h.running) {
        h.crash();
        sim.fault();
        events.push(`crash ${h.name}`);
      } else if (r < 0.24 && h.running) {
        h.stop(sim.now);
        events.push(`stop ${h.name}`);
      } else if (r < 0.34 && !h.running && !h.stopping) {
        h.start(sim.now);
        events.push(`start ${h.name}`);
      } else if (r < 0.46 && h.running) {
        const on = !h.node!.condition.draining;
        h.drain(sim.now, on);
        events.push(`${on ? 'drain' : 'undrain'} ${h.name}`);
      } else if (r < 0.56) {
        if (h.carrier) sim.fault();
        h.setCarrier(sim.now, !h.carrier);
        events.push(`carrier ${h.carrier ? 'up' : 'down'} ${h.name}`);
      } else if (r < 0.66) {
        const names = NAMES.filter(() => rand() < 0.5);
        sim.partition([names, NAMES.filter((n) => !names.includes(n))]);
        events.push(`partition ${names.join(',')} | rest`);
      } else if (r < 0.78) {
        sim.heal();
        events.push('heal');
      } else if (r < 0.88) {
        sim.dropRate = sim.dropRate ? 0 : 0.1;
        events.push(`drops ${sim.dropRate}`);
      } else {
        for (const x of sim.hosts) if (!x.running && !x.stopping) x.start(sim.now);
        events.push('start all');
      }
      if (process.env['SIM_TRACE']) console.error('EVENT', sim.now, events[events.length - 1]);
      sim.run(200 + Math.floor(rand() * 1500));
    }
    t.same(sim.violations, [], `seed ${seed}: no violation`, { violations: report(sim), events: events.join('; ') });
    t.ok(
      sim.stats.heartbeats > 1000,
      `seed ${seed}: ${sim.stats.heartbeats} heartbeats, ${sim.stats.drops} dropped; longest gap after a fault ${sim.stats.maxGapUnplanned} ms, longest overlap ${sim.stats.maxOverlap} ms`,
    );
  }
});

const WRONG = Buffer.alloc(32, 9);
const NEW = Buffer.alloc(48, 5);
const holders = (sim: Sim) => FIPS.map((ip) => sim.holdersOf(ip));
/** Runs `ms` in steps of `every`, calling `check` after each. */
const runChecking = (sim: Sim, ms: number, check: () => void, every = 20) => {
  for (let done = 0; done < ms; done += every) {
    sim.run(every);
    check();
  }
};

t.test('a host started with a wrong key takes nothing; the others hold each IP once', async (t) => {
  for (const late of [false, true]) {
    const sim = new Sim(rng(3));
    sim.keysDiffer = true;
    const wrong = sim.host('n2');
    wrong.keys = [WRONG];
    for (const h of sim.hosts) if (h !== wrong || !late) h.start(0);
    if (late) {
      sim.run(3000);
      wrong.start(sim.now);
    }
    let took = 0;
    runChecking(sim, 4000, () => (took += wrong.kernel.size));
    const what = late ? 'joining a running cluster' : 'in a cold start';
    t.equal(took, 0, `${what}: the wrong-key host never held an IP`);
    t.same(sim.violations, [], `${what}: no violation`, { violations: report(sim) });
    t.ok(
      holders(sim).every((h) => h.length === 1 && h[0] !== 'n2'),
      `${what}: one holder each among the others: ${JSON.stringify(holders(sim))}`,
    );
    t.ok(sim.stats.authFailures > 0, `${sim.stats.authFailures} heartbeats failed authentication`);
    t.ok(wrong.node!.auth().outvoted, 'the wrong-key host knows it is outvoted');
    t.same(sim.host('n1').node!.auth(), { failing: ['n2'], verified: 2, outvoted: false }, 'the others carry on');
  }
});

t.test('a holder reloaded with a wrong key keeps its IP, and nobody takes it while it is heard', async (t) => {
  const sim = new Sim(rng(4));
  sim.keysDiffer = true;
  for (const h of sim.hosts) h.start(0);
  sim.run(3000);
  const before = holders(sim);
  const victim = sim.host(before[0]![0]!);
  victim.setKeys([WRONG]);
  let doubled = 0;
  runChecking(sim, 3000, () => (doubled += holders(sim).filter((h) => h.length > 1).length));
  t.equal(doubled, 0, 'never two holders of one IP, sampled every 20 ms');
  t.same(holders(sim), before, 'nothing moved: its IP stays with it, the others keep theirs');
  t.same(sim.violations, [], 'no violation', { violations: report(sim) });
  // Once it is silent it is just Down, and its IP fails over as usual.
  victim.crash();
  sim.fault();
  sim.run(1000);
  t.equal(sim.holdersOf(FIPS[0]!).length, 1, 'after it died, its IP has one holder again');
  t.not(sim.holdersOf(FIPS[0]!)[0], victim.name);
  t.same(sim.violations, [], 'no violation', { violations: report(sim) });
});

t.test("two nodes with different keys: neither takes the other's IPs (a tie is outvoted)", async (t) => {
  const sim = new Sim(rng(5));
  sim.keysDiffer = true;
  const [a, b] = [sim.host('n1'), sim.host('n2')];
  a.start(0);
  b.start(0);
  sim.run(3000);
  const before = holders(sim);
  t.ok(
    before.every((h) => h.length === 1),
    `settled: ${JSON.stringify(before)}`,
  );
  b.setKeys([WRONG]);
  runChecking(sim, 3000, () => void 0);
  t.same(holders(sim), before, 'each keeps what it held; nothing is taken');
  t.ok(a.node!.auth().outvoted && b.node!.auth().outvoted, 'both outvoted');
  t.same(sim.violations, [], 'no violation', { violations: report(sim) });
  // A cold start with different keys: nobody can tell whose key is wrong, so nobody takes anything.
  const cold = new Sim(rng(6));
  cold.keysDiffer = true;
  cold.host('n2').keys = [WRONG];
  cold.host('n1').start(0);
  cold.host('n2').start(0);
  cold.run(3000);
  t.same(holders(cold), [[], [], []], 'a cold start with two keys: no IP is held (said loudly), none twice');
  t.same(
    cold.violations.filter((v) => v.what.includes(' held by ')),
    [],
    'never two holders',
  );
});

t.test('a three-step key rotation host by host: no heartbeat rejected, nothing moves', async (t) => {
  const sim = new Sim(rng(7));
  for (const h of sim.hosts) h.start(0);
  sim.run(3000);
  const before = holders(sim);
  for (const keys of [[KEY, NEW], [NEW, KEY], [NEW]])
    for (const h of sim.hosts) {
      h.setKeys(keys);
      runChecking(sim, 300, () => void 0);
    }
  // sim.keysDiffer is false: a heartbeat that failed authentication would have thrown.
  t.same(holders(sim), before, 'nothing moved');
  t.same(sim.violations, [], 'no violation', { violations: report(sim) });
});

t.test('a rotation in the wrong order (the new key signs on one host first) still does not split', async (t) => {
  const sim = new Sim(rng(8));
  sim.keysDiffer = true;
  for (const h of sim.hosts) h.start(0);
  sim.run(3000);
  const before = holders(sim);
  const first = sim.host(before[0]![0]!);
  first.setKeys([NEW, KEY]);
  sim.run(2000);
  t.ok(sim.stats.authFailures > 0, 'the others reject its heartbeats');
  t.same(holders(sim), before, 'nothing moved: the others do not take the IPs of a host they cannot verify');
  t.same(sim.violations, [], 'no violation', { violations: report(sim) });
  for (const h of sim.hosts) h.setKeys([NEW, KEY]);
  sim.run(1000);
  t.same(holders(sim), before, 'and once every host has both keys, all is as before');
});
