import t from 'tap';
import { FIPS, NAMES, Sim } from '../cluster-sim.js';
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
