import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLUSTER_CONTAINERS, CLUSTER_HOSTS, clusterConfig, settled, waitUntil } from '../lab/cluster.js';
import { ECHO, Lab } from '../lab/lab.js';
import { NODE } from '../lab/paths.js';
import { startStreams, startStreamsServer, type FlowResult } from '../lab/survival.js';
import { cutOff } from '../lab/traffic.js';
import { procStat } from './cluster.js';
import { median, msRow, oursUnplanned, pct, SHOP } from './unplanned.js';

// Connection survival (README, "Connection survival"): how many long-lived connections
// live through a move of their floating IP and how long they stall; what connection sync
// costs at 10,000 and 100,000 tracked connections; the unplanned failover with sync on
// and off. Trials: SYNC_UNPLANNED (default 20), SYNC_PLANNED (10), SYNC_FAILOVERS (20);
// sizes: SYNC_SIZES (default 10000,100000); parts: SYNC_PARTS (default survival,cost,failover).

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const UNPLANNED = env('SYNC_UNPLANNED', 20);
const PLANNED = env('SYNC_PLANNED', 10);
const FAILOVERS = env('SYNC_FAILOVERS', 20);
const COUNTS = { push: 10, echo: 10, idle: 5 };
const ALL = CLUSTER_HOSTS.map((h) => h.name);
const f = (x: number) => x.toFixed(0);

async function clusterLab(sync: boolean): Promise<{ lab: Lab; cfg: string }> {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab, { connectionSync: sync }));
  await startStreamsServer(lab);
  await Promise.all(ALL.map((h) => lab.startDaemon(h, cfg)));
  await settled(lab, ALL, 20_000, 200);
  return { lab, cfg };
}

type Move = 'cut' | 'SIGTERM' | 'drain';

/** One trial: the 26 flows, the shop IP moved by `move`, the victim back afterwards. */
async function survivalTrial(lab: Lab, cfg: string, move: Move): Promise<FlowResult[]> {
  const status = await settled(lab, ALL, 20_000, 200);
  const victim = status.floatingIPs[SHOP]!;
  const s = await startStreams(lab, 'c1', ECHO.inPolicy, COUNTS);
  await sleep(2500); // the UDP flow is assured (synced) after 2 s
  if (move === 'cut') await cutOff(lab, victim);
  else if (move === 'SIGTERM') await lab.stopDaemon(victim, 'SIGTERM');
  else await lab.egress(victim, ['drain']);
  await sleep(2500);
  s.useIdle();
  await sleep(1000);
  const results = await s.results();
  // One line per trial on stderr: which flows died, and how, for a post-mortem.
  const owner = (await lab.status(ALL.find((h) => h !== victim)!)).floatingIPs[SHOP];
  const dead = results.filter((r) => !r.alive).map((r) => `${r.id} (${r.error ?? 'silent'})`);
  process.stderr.write(`${move} ${victim}→${owner}: ${dead.length ? `dead ${dead.join(', ')}` : 'all alive'}\n`);
  if (move === 'cut') await lab.restartDaemon(victim, cfg);
  else if (move === 'SIGTERM') await lab.startDaemon(victim, cfg);
  else await lab.egress(victim, ['undrain']);
  return results;
}

function survivalRows(name: string, trials: readonly FlowResult[][]): string {
  if (!trials.length) return `| ${name} | 0 | - | - | - | - | - |`;
  const all = trials.flat();
  const alive = all.filter((r) => r.alive).length;
  const byKind = (k: FlowResult['kind']) => {
    const of = all.filter((r) => r.kind === k);
    return `${k} ${of.filter((r) => r.alive).length}/${of.length}`;
  };
  const stalls = all.filter((r) => r.kind !== 'idle').map((r) => r.gapMs);
  const moved = all.filter((r) => r.seen.length !== 1).length;
  return `| ${name} | ${trials.length} | ${alive}/${all.length} (${['push', 'echo', 'idle', 'udp'].map((k) => byKind(k as FlowResult['kind'])).join(', ')}) | ${f(median(stalls))} | ${f(pct(stalls, 99))} | ${f(Math.max(...stalls))} | ${moved} |`;
}

async function survival(): Promise<string> {
  const { lab, cfg } = await clusterLab(true);
  try {
    const cut: FlowResult[][] = [];
    const planned: Record<'SIGTERM' | 'drain', FlowResult[][]> = { SIGTERM: [], drain: [] };
    for (let i = 0; i < UNPLANNED; i++) cut.push(await survivalTrial(lab, cfg, 'cut'));
    for (let i = 0; i < PLANNED; i++) {
      const move = i % 2 ? 'drain' : 'SIGTERM';
      planned[move].push(await survivalTrial(lab, cfg, move));
    }
    return `### Survival: 10 server-push, 10 client-echo, 5 idle TCP connections and one UDP flow per trial

Each trial opens the 26 flows from c1 through the shop IP, moves the IP 2.5 s later, uses
the idle connections 2.5 s after the move, and asks each flow whether it lived. A stall
is the longest time between two messages a flow received (server-push and UDP: every
50 ms; client-echo: an echo every 50 ms); idle connections are left out of the stalls.

| move | trials | connections alive | stall p50 ms | stall p99 ms | stall max ms | flows whose source (IP, port) changed at the server |
|---|---:|---|---:|---:|---:|---:|
${survivalRows('unplanned: port down + kill -9', cut)}
${survivalRows('planned: SIGTERM', planned.SIGTERM)}
${survivalRows('planned: drain', planned.drain)}
`;
  } finally {
    await lab.destroy();
  }
}

async function failoverOnOff(): Promise<string> {
  const rows: string[] = [];
  const p99: Record<string, number> = {};
  for (const sync of [true, false]) {
    const { lab, cfg } = await clusterLab(sync);
    try {
      const ms: number[] = [];
      for (let i = 0; i < FAILOVERS; i++)
        ms.push((await oursUnplanned(lab, cfg, { intervalMs: 100, pollMs: 200, settleMs: 20_000 })).recoveredMs);
      p99[String(sync)] = pct(ms, 99);
      rows.push(msRow(`unplanned failover, sync ${sync ? 'on' : 'off'}`, ms, 'cut → first answer with the shop IP'));
    } finally {
      await lab.destroy();
    }
  }
  return `### Failover with connection sync on and off

The failover section's measure (a UDP request every 2 ms from c1, each a new connection;
the owner cut and killed; time to the first answer with the shop IP), on two clusters
that differ only in \`connectionSync\`. Sync adds ${f(p99.true! - p99.false!)} ms to p99 (target ≤ 50 ms).

| series | trials | min | median | p99 | max | note |
|---|---:|---:|---:|---:|---:|---|
${rows.join('\n')}
`;
}

/** CPU ticks and RSS of a daemon and its children (the conntrack event listener). */
function usage(pid: number): { ticks: number; rssKb: number } {
  const pids = [pid];
  try {
    for (const t of readdirSync(`/proc/${pid}/task`))
      pids.push(...readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
  } catch {
    // gone
  }
  let ticks = 0;
  let rssKb = 0;
  for (const p of pids) {
    try {
      const s = procStat(p);
      ticks += s.cpuTicks;
      rssKb += s.rssKb;
    } catch {
      // exited meanwhile
    }
  }
  return { ticks, rssKb };
}

const WINDOW_S = 30;

async function cost(n: number): Promise<string> {
  const { lab } = await clusterLab(true);
  try {
    const status = await settled(lab, ALL, 20_000, 200);
    const owner = status.floatingIPs[SHOP]!;
    const candidate = ALL.find((h) => h !== owner && h !== 'h4' && h !== 'h3') ?? 'h3';
    const pidOf = (h: string) => lab.daemons.get(h)!.pid!;
    const idle = { owner: usage(pidOf(owner)), candidate: usage(pidOf(candidate)) };
    const fillStart = Date.now();
    const fill = await lab.sh(owner, `${NODE.join(' ')} ${join(import.meta.dirname, 'sync-fill.js')} ${n} ${SHOP}`, {
      timeoutMs: 300_000,
    });
    const cachedOn = async (h: string) => {
      const s = (await lab.status(h)).connectionSync as { cached: Record<string, number> };
      return (s.cached[SHOP] ?? 0) >= n;
    };
    await waitUntil(`${candidate} to cache ${n} connections`, () => cachedOn(candidate), 120_000, 1000);
    const syncedS = (Date.now() - fillStart) / 1000;
    const before = { owner: usage(pidOf(owner)), candidate: usage(pidOf(candidate)) };
    await sleep(WINDOW_S * 1000);
    const after = { owner: usage(pidOf(owner)), candidate: usage(pidOf(candidate)) };
    const cpu = (h: 'owner' | 'candidate') => ((after[h].ticks - before[h].ticks) / 100 / WINDOW_S) * 100;
    // The take-over with n connections to install.
    const cut = Date.now();
    await cutOff(lab, owner);
    const heir = await waitUntil(
      'a new owner',
      () => {
        for (const h of ALL.filter((x) => x !== owner)) {
          const line = readFileSync(lab.daemonLog(h), 'utf8')
            .split('\n')
            .find((l) => l.includes('synced connections for') && (JSON.parse(l) as { time: number }).time >= cut);
          if (line) return Promise.resolve({ host: h, line: JSON.parse(line) as { msg: string } });
        }
        return Promise.resolve(undefined);
      },
      60_000,
      500,
    );
    const install = /install (\d+) synced connections for \S+ in (\d+) ms/.exec(heir.line.msg);
    // Down → announcement, as the heir logs it (the take-over a prober would see, less the Down timeout).
    const took = await waitUntil(
      `${heir.host} to log the take-over`,
      () =>
        Promise.resolve(
          readFileSync(lab.daemonLog(heir.host), 'utf8')
            .split('\n')
            .filter((l) => l.includes(`"took ${SHOP} over `))
            .map((l) => JSON.parse(l) as { time: number; outageMs: number })
            .find((l) => l.time >= cut),
        ),
      10_000,
      200,
    );
    return `| ${n.toLocaleString('en')} | ${(JSON.parse(fill.stdout) as { inserted?: number }).inserted ?? '?'} in the owner's table; candidate had them ${syncedS.toFixed(1)} s after the fill began | ${cpu('owner').toFixed(1)} % | ${cpu('candidate').toFixed(1)} % | ${f((after.owner.rssKb - idle.owner.rssKb) / 1024)} (${f(after.owner.rssKb / 1024)}) | ${f((after.candidate.rssKb - idle.candidate.rssKb) / 1024)} (${f(after.candidate.rssKb / 1024)}) | ${install ? `${install[1]} in ${install[2]} ms` : heir.line.msg} | ${took.outageMs} ms |`;
  } finally {
    await lab.destroy();
  }
}

export async function syncSection(): Promise<string> {
  const only = (part: string) => (process.env.SYNC_PARTS ?? 'survival,cost,failover').split(',').includes(part);
  const parts = only('survival') ? [await survival()] : [];
  const costs: string[] = [];
  for (const n of (process.env.SYNC_SIZES ?? '10000,100000').split(',').map(Number))
    if (only('cost')) costs.push(await cost(n));
  if (costs.length)
    parts.push(`### What connection sync costs

N established connections SNATed to the shop IP are put in its owner's conntrack table
(made up, an hour to live); the owner sends them to the IP's candidates. CPU is the mean
over ${WINDOW_S} s once a candidate has them all (three full sweeps, every 10 s), daemon
and its conntrack event listener together; RSS in MiB, growth over the idle daemon (and
the total). Then the owner is cut: the new owner announces the IP, then installs them
(a handover installs them first; after a failover nobody serves the IP until it is announced).
"Down → announced" is the take-over as the new owner logs it: from its peer's Down to the
gratuitous ARP.

| connections | synced | owner CPU | candidate CPU | owner RSS MiB | candidate RSS MiB | take-over: installed | take-over: Down → announced |
|---:|---|---:|---:|---:|---:|---|---:|
${costs.join('\n')}
`);
  if (only('failover')) parts.push(await failoverOnOff());
  return `## Connection survival

${parts.join('\n')}`;
}
