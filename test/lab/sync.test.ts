import t, { type Test } from 'tap';
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
} from '../../lab/cluster.js';
import { ECHO, Lab } from '../../lab/lab.js';
import {
  churn,
  nowMs,
  startStreams,
  startStreamsServer,
  summary,
  type FlowResult,
  type Streams,
} from '../../lab/survival.js';
import { cutOff } from '../../lab/traffic.js';

// Connection survival (README, "Connection survival"): long-lived connections through a
// floating IP live through every way the IP can move, because the candidates keep the
// owner's conntrack entries and the new owner installs them before it announces the IP.
// c1 (behind h3) leaves with the shop IP, whose candidates are h1, h2 and h3.

const SHOP = CLUSTER_FIPS.shop;
const COUNTS = { push: 10, echo: 10, idle: 5 };
const ALL = ['h1', 'h2', 'h3', 'h4'];
/**
 * Time for the connections to be up and their entries synced before the IP moves: more
 * than 2 s, after which the kernel marks the UDP flow assured (what is synced).
 */
const WARM_MS = 2500;
/** Time after the move for stalled connections to come back (TCP retransmits back off: 200 ms, 400 ms, ...). */
const AFTER_MS = 2500;
/**
 * 2,000 new connections a second for 30 s, the owner cut 10 s in: nothing may be lost but
 * what began in the outage window. (CHURN_RATE=N runs another rate.)
 */
const CHURN = { rate: Number(process.env.CHURN_RATE ?? 2000), seconds: 30, cutAfterMs: 10_000, windowMs: 1500 };

async function withStreams(lab: Lab, move: () => Promise<void>): Promise<FlowResult[]> {
  const s: Streams = await startStreams(lab, 'c1', ECHO.inPolicy, COUNTS);
  await sleep(WARM_MS);
  await move();
  await sleep(AFTER_MS);
  s.useIdle();
  await sleep(1000);
  return s.results();
}

function allSurvive(t: Test, what: string, results: readonly FlowResult[], lab?: Lab): void {
  t.comment(`${what}: ${summary(results)}`);
  t.equal(results.length, 26, '25 TCP connections and one UDP flow');
  const dead = results.filter((r) => !r.alive);
  if (dead.length && lab) t.comment(`the daemons' last lines:\n${logTails(lab, ALL, 12)}`);
  t.same(
    dead.map((r) => `${r.id}: ${r.error ?? 'silent'}`),
    [],
    'all 26 survive',
  );
  const moved = results.filter((r) => r.seen.length !== 1 || !r.seen[0]!.startsWith(`${SHOP}:`));
  t.same(
    moved.map((r) => `${r.id}: ${r.seen.join(', ')}`),
    [],
    `the server saw each from one (${SHOP}, port) all along`,
  );
}

/**
 * Whether `host`, at its last take-over of `ip`, installed the synced connections before
 * or after it announced the IP: those it installs after say so in its log.
 */
function installed(lab: Lab, host: string, ip: string): 'before' | 'after' | 'not' {
  const line = readFileSync(lab.daemonLog(host), 'utf8')
    .split('\n')
    .filter((l) => l.includes('"change"'))
    .map((l) => String((JSON.parse(l) as { change: string }).change))
    .filter((c) => /^install \d+ synced connections for /.test(c) && c.includes(` ${ip} `))
    .at(-1);
  if (!line) return 'not';
  return line.endsWith(', after the announcement') ? 'after' : 'before';
}

t.test('connection survival', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab));
  await startStreamsServer(lab);
  await Promise.all(ALL.map((h) => lab.startDaemon(h, cfg)));
  let status = await settled(lab, ALL);
  const owner = () => status.floatingIPs[SHOP]!;

  await t.test('unplanned cut (port down + kill -9)', async (t) => {
    const victim = owner();
    const results = await withStreams(lab, async () => {
      await cutOff(lab, victim);
      status = await settled(
        lab,
        ALL.filter((h) => h !== victim),
      );
    });
    allSurvive(t, `cut of ${victim}, ${SHOP} to ${owner()}`, results, lab);
    // The IP is dark until announced: nothing waits before it, not even the connections.
    t.equal(installed(lab, owner(), SHOP), 'after', 'the synced connections went in after the announcement');
    const sync = (await lab.status(owner())).connectionSync as { installed: number };
    t.ok(sync.installed >= 26, `the new owner installed the synced entries, the UDP flow's too (${sync.installed})`);
    await lab.restartDaemon(victim, cfg);
    status = await settled(lab, ALL);
  });

  await t.test('SIGTERM of the owner', async (t) => {
    const victim = owner();
    const results = await withStreams(lab, async () => {
      await lab.stopDaemon(victim, 'SIGTERM');
      status = await settled(
        lab,
        ALL.filter((h) => h !== victim),
      );
    });
    allSurvive(t, `SIGTERM of ${victim}, ${SHOP} to ${owner()}`, results, lab);
    // The old owner serves until the announcement: make-before-break, for state too.
    t.equal(installed(lab, owner(), SHOP), 'before', 'the synced connections went in before the announcement');
    await lab.startDaemon(victim, cfg);
    status = await settled(lab, ALL);
  });

  await t.test('drain of the owner', async (t) => {
    const victim = owner();
    const results = await withStreams(lab, async () => {
      await lab.egress(victim, ['drain']);
      status = await settled(lab, ALL);
    });
    allSurvive(t, `drain of ${victim}, ${SHOP} to ${owner()}`, results, lab);
    t.equal(installed(lab, owner(), SHOP), 'before', 'the synced connections went in before the announcement');
    await lab.egress(victim, ['undrain']);
    status = await settled(lab, ALL);
  });

  await t.test(`churn: ${CHURN.rate} new connections a second for ${CHURN.seconds} s across a cut`, async (t) => {
    const victim = owner();
    const load = churn(lab, 'c1', ECHO.inPolicy, CHURN.rate, CHURN.seconds);
    await sleep(CHURN.cutAfterMs);
    const cut = nowMs();
    await cutOff(lab, victim);
    // No polling while the load runs: each status call starts a Node process, and the
    // daemons need the CPU.
    const r = await load;
    if (r.failed) t.comment(`the daemons' last lines:\n${logTails(lab, ALL, 12)}`);
    status = await settled(
      lab,
      ALL.filter((h) => h !== victim),
    );
    const outside = r.failedAt.filter((at) => at < cut - 200 || at > cut + CHURN.windowMs);
    const rel = (at: number) => Math.round(at - cut);
    t.comment(
      `churn: ${r.ok} ok, ${r.failed} failed (begun ${r.failedAt.length ? `${rel(Math.min(...r.failedAt))}..${rel(Math.max(...r.failedAt))}` : '-'} ms from the cut), ${SHOP} to ${owner()}`,
    );
    t.ok(r.ok + r.failed >= CHURN.rate * CHURN.seconds, 'every connection ran');
    t.same(
      outside.map(rel),
      [],
      `no connection failed that began outside the outage window (200 ms before the cut to ${CHURN.windowMs} ms after)`,
    );
    await lab.restartDaemon(victim, cfg);
    status = await settled(lab, ALL);
  });

  await t.test('double failover A→B→C', async (t) => {
    const path = [owner()];
    let up = ALL;
    const results = await withStreams(lab, async () => {
      for (let i = 0; i < 2; i++) {
        const victim = owner();
        await cutOff(lab, victim);
        up = up.filter((h) => h !== victim);
        status = await settled(lab, up);
        path.push(owner());
        // The middle owner sends what it installed on to the last candidate.
        if (i === 0) await sleep(WARM_MS);
      }
    });
    allSurvive(t, `double failover ${path.join('→')}`, results, lab);
    // The hardest case: c1's own connections are tracked on its host un-NATed until it
    // takes the IP (docs/datapath.md, "Order of changes", 5a).
    const workloadHost = CLUSTER_CONTAINERS.find((c) => c.name === 'c1')!.host;
    t.equal(path.at(-1), workloadHost, "the last owner is c1's own host");
    t.equal(new Set(path).size, 3, 'three owners in turn');
  });
});

t.test('without connection sync, server-push connections break', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab, { connectionSync: false }));
  await startStreamsServer(lab);
  await Promise.all(ALL.map((h) => lab.startDaemon(h, cfg)));
  const status = await settled(lab, ALL);
  const victim = status.floatingIPs[SHOP]!;
  const results = await withStreams(lab, async () => {
    await cutOff(lab, victim);
    await settled(
      lab,
      ALL.filter((h) => h !== victim),
    );
  });
  t.comment(`sync disabled, cut of ${victim}: ${summary(results)}`);
  const push = results.filter((r) => r.kind === 'push');
  t.ok(
    push.every((r) => !r.alive),
    `every server-push connection broke (${push.filter((r) => r.alive).length} of ${push.length} alive)`,
  );
});
