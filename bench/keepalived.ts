import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLUSTER_CONTAINERS, CLUSTER_HOSTS, clusterConfig } from '../lab/cluster.js';
import { ECHO, Lab } from '../lab/lab.js';
import { outage, startProber, waitForFlow } from '../lab/traffic.js';
import { benchDeps } from './deps.js';
import { KeepalivedLab, masterDownMs, PRIORITY } from './keepalived-lab.js';
import { median, msRow, nftRunMs, oursUnplanned, pct, phaseRows, PROBE_MS, SHOP, type Trial } from './unplanned.js';

// egress-natd against keepalived, side by side: two labs of the same shape exist at once,
// one running our daemons, one running keepalived, and the trials alternate between them
// (ours, keepalived, ours, ...), so both see the same machine noise. Same prober, same cut.

const TRIALS = Number(process.env.KEEPALIVED_TRIALS || 20);
const INTERVAL_MS = 100;

async function keepalivedTrial(k: KeepalivedLab): Promise<Trial> {
  const victim = await k.holder();
  const probe = await startProber(k.lab, 'c1', ECHO.inPolicy, PROBE_MS);
  try {
    await waitForFlow(probe.log, SHOP);
    await sleep(INTERVAL_MS + Math.random() * INTERVAL_MS); // a random phase of the advert interval
    const cut = await k.cut(victim);
    await waitForFlow(probe.log, SHOP, 5000);
    await sleep(400);
    const o = outage(await probe.stop(), cut, SHOP);
    if (o.recoveredMs === undefined || o.ips.some((ip) => ip !== SHOP))
      throw new Error(`keepalived failover from ${victim}: ${JSON.stringify(o)}`);
    return { victim, recoveredMs: o.recoveredMs, lost: o.lost };
  } finally {
    await probe.stop();
    await k.restore(victim);
    await sleep(3 * INTERVAL_MS + 100); // the restored host hears the master before it could claim
  }
}

export async function keepalivedSection(): Promise<string> {
  benchDeps();
  // keepalived prints its version on stderr.
  const v = spawnSync('keepalived', ['--version'], { encoding: 'utf8' });
  const version = `${v.stdout}${v.stderr}`.split('\n')[0]!.trim();
  const ours = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  let theirs: Lab | undefined;
  try {
    theirs = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
    const cfg = join(ours.dir, 'config.yaml');
    writeFileSync(cfg, clusterConfig(ours));
    await Promise.all(ours.hosts.map((h) => ours.startDaemon(h.name, cfg)));
    const k = new KeepalivedLab(theirs, SHOP, INTERVAL_MS);
    const c1 = CLUSTER_CONTAINERS.find((c) => c.name === 'c1')!;
    await k.setUp(c1.cidr, c1.host);
    const loadBefore = loadavg()[0]!;
    const a: Trial[] = [];
    const b: Trial[] = [];
    for (let i = 0; i < TRIALS; i++) {
      a.push(await oursUnplanned(ours, cfg, { intervalMs: INTERVAL_MS }));
      b.push(await keepalivedTrial(k));
      const [x, y] = [a[i]!, b[i]!];
      process.stderr.write(
        `keepalived ${i + 1}/${TRIALS}: ours ${x.recoveredMs.toFixed(0)} ms (${x.victim}), keepalived ${y.recoveredMs.toFixed(0)} ms (${y.victim})\n`,
      );
    }
    const loadAfter = loadavg()[0]!;
    const nft = await nftRunMs(ours, 'h4');
    await k.stopAll();
    return report(
      a,
      nft,
      a.map((t) => t.recoveredMs),
      b.map((t) => t.recoveredMs),
      version,
      loadBefore,
      loadAfter,
    );
  } finally {
    await theirs?.destroy();
    await ours.destroy();
  }
}

function report(
  trials: readonly Trial[],
  nft: number[],
  ours: number[],
  theirs: number[],
  version: string,
  before: number,
  after: number,
): string {
  const down = (p: number) => masterDownMs(INTERVAL_MS, p).toFixed(0);
  const ratio = (p: number) => (pct(ours, p) / pct(theirs, p)).toFixed(2);
  const mark = (p: number) => (pct(ours, p) <= pct(theirs, p) ? '✓' : '✗');
  return `## Failover against keepalived: the same lab, the same cut, ${INTERVAL_MS} ms timers

Two labs of the same shape (4 hosts, c1 behind h3, the router's echo server) exist at once: one runs
egress-natd with the defaults (${INTERVAL_MS} ms heartbeats, 3 missed), the other ${version} with VRRPv3,
\`advert_int ${INTERVAL_MS / 1000}\`, one virtual IP (${SHOP}), multicast adverts, priorities like our election
(workers h1 ${PRIORITY.h1} and h2 ${PRIORITY.h2}, the control-plane h3 ${PRIORITY.h3}, h4 ${PRIORITY.h4}), all \`state BACKUP\` with
\`nopreempt\` (like ours, a host that returns takes nothing back), **no virtual MAC** (\`use_vmac\` off: the VIP
sits on eth0, and a new master is found by its gratuitous ARPs alone), no authentication (VRRPv3 has none; ours
signs every heartbeat with HMAC-SHA256). keepalived's data path is made by hand: c1's host routes c1's traffic
to the echo network via the VIP, every host SNATs what it forwards from c1 to the VIP. Trials alternate between
the labs, ${TRIALS} each; the same prober (c1, a UDP request every ${PROBE_MS} ms, each a new NAT mapping) and the same
cut as the failover section: the holder's switch port down, then SIGKILL (for keepalived, its parent and its VRRP
child). Figure: from the cut to the first answer with ${SHOP} as source. Load average ${before.toFixed(1)} before,
${after.toFixed(1)} after (2 cores).

**Timers.** Ours: a node is Down 3 × ${INTERVAL_MS} ms after its last heartbeat, so a cut at a random phase waits
${2 * INTERVAL_MS} to ${3 * INTERVAL_MS} ms, then the new owner adds a macvlan, the address and its nft objects, and
announces. keepalived: a backup becomes master after Master_Down_Interval = 3 × Advertisement_Interval + Skew_Time,
Skew_Time = (256 − priority) × Advertisement_Interval / 256 (RFC 5798): ${down(PRIORITY.h2!)} ms for h2 (${PRIORITY.h2}),
${down(PRIORITY.h1!)} ms for h1 (${PRIORITY.h1}), counted from the last advert heard, so a cut at a random phase waits
${(masterDownMs(INTERVAL_MS, PRIORITY.h1!) - INTERVAL_MS).toFixed(0)} to ${down(PRIORITY.h2!)} ms;
then it adds the VIP and sends gratuitous ARPs, which the router and c1's host must take before answers return.
At equal timers the two detect the fault within a few ms of each other (the skew); what separates them is the
take-over: keepalived adds one address, egress-natd's new owner reconciles its data plane (a macvlan with its
sysctls, the address, nft objects and routes) before the IP answers. The second table times that from its log.

| figure | trials | min ms | median ms | p99 ms | max ms | note |
|---|---:|---:|---:|---:|---:|---|
${msRow('egress-natd: unplanned failover', ours, '')}
${msRow('keepalived: unplanned failover', theirs, '')}

| ratio ours / keepalived | value | target |
|---|---:|---|
| median | ${ratio(50)} | ≤ 1.0 ${mark(50)} |
| p99 | ${ratio(99)} | ≤ 1.0 ${mark(99)} |

Median of the paired differences (ours − keepalived, trial by trial): ${median(ours.map((x, i) => x - theirs[i]!)).toFixed(0)} ms.
Where egress-natd's time goes (its log's clock is the wall clock, read to the ms):

${phaseRows(trials, nft)}
`;
}
