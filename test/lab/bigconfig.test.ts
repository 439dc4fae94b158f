import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CLUSTER_CONTAINERS,
  CLUSTER_FIPS,
  CLUSTER_HOSTS,
  clusterConfig,
  logTails,
  settled,
  waitUntil,
} from '../../lab/cluster.js';
import { Lab } from '../../lab/lab.js';

// A config of 1,000 policies and 100,000 CIDRs on the four-daemon cluster: parsing,
// validating and planning it takes seconds, and none of that may delay heartbeats or
// expiry. Three reloads on an owner and 30 s of steady state: not one ownership change.
// Each reload reads a changed file (a new digest) that plans the same data plane. A reload
// that changes the plan rebuilds the 50,000-element source maps: that flapped in most runs
// while every close of a netfilter netlink socket waited for the transaction (fixed, see
// netfilter-close.test.ts), and still in 1 of 4 after: the owner's peers miss its
// heartbeats for 300 ms during the reload, its loop not stalled (issue 10 stays open).

const POLICIES = 1000;
const PER_SIDE = 50;
const STEADY_MS = 30_000;
const QUIET_MS = 10_000;
/** Every status poll starts four CLI processes: poll slowly, the daemons need the CPU. */
const POLL_MS = 1_000;
const FIPS = Object.values(CLUSTER_FIPS);

const ip = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

/** Policies with sources and destinations far from the lab's own addresses; non-adjacent, so nothing merges. */
function bigPolicies(): string {
  const out: string[] = [];
  for (let p = 0; p < POLICIES; p++) {
    const cidrs = (base: number) =>
      Array.from({ length: PER_SIDE }, (_, i) => `${ip((base << 24) + (((p * PER_SIDE + i) * 2) << 8))}/24`);
    out.push(`  - name: big${p}
    sources: [{ cidrs: [${cidrs(20).join(', ')}] }]
    destinations: [${cidrs(120)
      .map((c) => `{ cidr: ${c} }`)
      .join(', ')}]
    action: SNAT
    gatewayRef: secondary
    egressIP: ${CLUSTER_FIPS.reports}`);
  }
  return `${out.join('\n')}\n`;
}

interface LogLine {
  readonly msg: string;
  readonly from?: string | null;
}

const ownerChanges = (lab: Lab, host: string): string[] =>
  readFileSync(lab.daemonLog(host), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as LogLine)
    .filter((l) => l.msg.startsWith('owner of ') && l.from !== null)
    .map((l) => l.msg);

t.test('a big config: reloads and steady state without a flap', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  const text = clusterConfig(lab) + bigPolicies();
  writeFileSync(cfg, text);
  const names = lab.hosts.map((h) => h.name);
  await Promise.all(names.map((h) => lab.startDaemon(h, cfg)));
  const everyIPOwned = async () => {
    const s = await settled(lab, names, 0);
    return FIPS.every((ip) => s.floatingIPs[ip]) ? s : undefined;
  };
  await waitUntil('every IP owned, the owners agreed and held', everyIPOwned, 90_000, POLL_MS).catch((e: Error) => {
    throw new Error(`${e.message}\n${logTails(lab, names)}`, { cause: e });
  });
  // The baseline is taken once the start is over: four daemons applying 100,000 elements
  // at once on two cores is start-up, not what this test measures.
  const changes = () => names.map((h) => ownerChanges(lab, h).length).join();
  await waitUntil(
    `no ownership change for ${QUIET_MS / 1000} s`,
    async () => {
      const was = changes();
      await sleep(QUIET_MS);
      return was === changes() && (await settled(lab, names, 0)) ? true : undefined;
    },
    120_000,
    0,
  );
  const before = Object.fromEntries(names.map((h) => [h, ownerChanges(lab, h).length]));

  const first = await settled(lab, names);
  const owner = first.floatingIPs[CLUSTER_FIPS.reports]!;
  for (let i = 1; i <= 3; i++) {
    // A changed file takes the reload path: parse, validate and plan (on the planner's
    // thread), the new config on the loop, and status and metrics for it.
    writeFileSync(cfg, `${text}# reload ${i}\n`);
    lab.signalDaemon(owner, 'SIGHUP');
    const reloaded = async () => (await lab.status(owner)).counters.reloads.ok >= i;
    await waitUntil(`reload ${i} on ${owner}`, reloaded, 60_000, POLL_MS);
  }
  await sleep(STEADY_MS);

  const after = await settled(lab, names, 10_000, POLL_MS);
  t.same(after.floatingIPs, first.floatingIPs, 'the same owners as before the reloads');
  for (const h of names) {
    t.same(ownerChanges(lab, h).slice(before[h]), [], `${h} logged no ownership change`);
  }
  for (const fip of FIPS) t.equal((await lab.holders(fip)).length, 1, `${fip} has one holder`);
  const s = await lab.status(owner);
  t.equal(s.counters.reloads.ok, 3, 'three reloads applied');
  t.equal(s.counters.reloads.failed, 0);
});
