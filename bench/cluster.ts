import { cliTable } from './cli.js';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CLUSTER_CONTAINERS,
  CLUSTER_HOSTS,
  clusterConfig,
  labSite,
  settled,
  siteConfig,
  waitUntil,
} from '../lab/cluster.js';
import { ECHO, Lab, SUBNET_PREFIX, type HostSpec } from '../lab/lab.js';
import { NO_TEST_RUNNER_HOOKS, sibling } from '../lab/paths.js';
import { longestGap, nowNs, outage, startProber, waitForFlow } from '../lab/traffic.js';
import { loadConfig } from '../src/config/load.js';
import { msRow, oursUnplanned, PROBE_MS, SHOP } from './unplanned.js';

// Failover and daemon cost in the namespace lab, default settings (100 ms interval,
// 3 missed). Every figure is measured from real traffic: a prober in a container sends
// a UDP request every PROBE_MS ms to the echo server, which answers with the source IP.

const FAILOVER_TRIALS = 20;
const PLANNED_TRIALS = 10;
const PEERS = 32;
const LOAD_SECONDS = 30;
/** A daemon runs for months: measure after V8 has compiled the hot paths, not during start-up. */
const WARMUP_SECONDS = 10;
const f = (x: number) => x.toFixed(0);

async function failover(lab: Lab, cfg: string): Promise<string> {
  const names = lab.hosts.map((h) => h.name);
  const unplanned: number[] = [];
  const unplannedLost: number[] = [];
  for (let i = 0; i < FAILOVER_TRIALS; i++) {
    const t = await oursUnplanned(lab, cfg, { intervalMs: 100 });
    unplanned.push(t.recoveredMs);
    unplannedLost.push(t.lost);
    process.stderr.write(`unplanned ${i + 1}/${FAILOVER_TRIALS}: ${f(t.recoveredMs)} ms (${t.victim} cut)\n`);
  }

  const planned: Record<'SIGTERM' | 'drain', { gap: number[]; lost: number[]; sent: number[]; handover: number[] }> = {
    SIGTERM: { gap: [], lost: [], sent: [], handover: [] },
    drain: { gap: [], lost: [], sent: [], handover: [] },
  };
  for (let i = 0; i < PLANNED_TRIALS * 2; i++) {
    const how = i % 2 === 0 ? 'SIGTERM' : 'drain';
    const status = await settled(lab, names);
    const victim = status.floatingIPs[SHOP]!;
    const probe = await startProber(lab, 'c1', ECHO.inPolicy, PROBE_MS);
    await waitForFlow(probe.log, SHOP);
    await sleep(100 + Math.random() * 100);
    const t0 = nowNs();
    if (how === 'SIGTERM') await lab.stopDaemon(victim, 'SIGTERM');
    else await lab.egress(victim, ['drain']);
    const handover = Number(nowNs() - t0) / 1e6;
    await sleep(400);
    const log = await probe.stop();
    const o = outage(log, t0, SHOP);
    if (o.ips.some((ip) => ip !== SHOP)) throw new Error(`planned trial ${i}: ${JSON.stringify(o)}`);
    const r = planned[how];
    const gap = longestGap(log, t0 - 50_000_000n); // from just before the command to the end
    r.gap.push(gap);
    r.lost.push(o.lost);
    r.sent.push(o.sent);
    r.handover.push(handover);
    process.stderr.write(`${how} ${i + 1}/${PLANNED_TRIALS * 2}: longest gap ${f(gap)} ms, ${o.lost}/${o.sent} lost\n`);
    if (how === 'SIGTERM') await lab.startDaemon(victim, cfg);
    else await lab.egress(victim, ['undrain']);
  }

  const row = msRow;
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  return `## Failover: ${lab.hosts.length} hosts, 100 ms heartbeats, 3 missed (the defaults)

A prober in c1 (behind the control-plane host) sends a UDP request every ${PROBE_MS} ms, each from a fresh port
(a new NAT mapping), to the echo server, which answers with the source IP it sees.

- **Unplanned**: the owner of ${SHOP} is cut off the segment (its switch port down) and its daemon killed with
  SIGKILL. Time from the cut to the first answer, with ${SHOP} as source, to a request sent after the cut.
  Cuts fall at random phases of the heartbeat interval; the Down timeout alone is 200 to 300 ms of it.
- **Planned**: \`SIGTERM\` of the owner's daemon, or \`egress-natd drain\` on it. Make-before-break: the old owner
  serves until the new one claims the IP. "Longest gap" is the longest time without any answer around the
  handover (${PROBE_MS} ms is the probe interval itself); "handover" is how long the command took (the daemon
  exits, or drain returns, once the new owner has claimed the IP).

| figure | trials | min ms | median ms | p99 ms | max ms | note |
|---|---:|---:|---:|---:|---:|---|
${row('unplanned failover (cut + kill -9)', unplanned, `target p99 ≤ 400 ms; lost requests: ${sum(unplannedLost)} (they fall in the outage)`)}
${row('planned: SIGTERM, longest gap in answers', planned.SIGTERM.gap, `target p99 ≤ 50 ms; lost ${sum(planned.SIGTERM.lost)} of ${sum(planned.SIGTERM.sent)} requests`)}
${row('planned: SIGTERM, handover (signal → daemon exited)', planned.SIGTERM.handover, '')}
${row('planned: drain, longest gap in answers', planned.drain.gap, `target p99 ≤ 50 ms; lost ${sum(planned.drain.lost)} of ${sum(planned.drain.sent)} requests`)}
${row('planned: drain, handover (command → answer)', planned.drain.handover, '')}
`;
}

export function procStat(pid: number): { cpuTicks: number; rssKb: number; hwmKb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)![1]);
  return { cpuTicks: Number(fields[11]) + Number(fields[12]), rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

const mark = (ok: boolean) => (ok ? '✓' : '✗');

/** One daemon, PEERS simulated peers on the same segment, LOAD_SECONDS of heartbeats. */
export async function resources(): Promise<string> {
  const daemonHost: HostSpec = { name: 'h1', ip: `${SUBNET_PREFIX}.1`, labels: { egress: 'yes' } };
  const lab = await Lab.create([daemonHost, { name: 'gen', ip: `${SUBNET_PREFIX}.2` }], []);
  try {
    const peers = Array.from({ length: PEERS }, (_, i) => ({
      name: `peer${String(i + 1).padStart(2, '0')}`,
      ip: `${SUBNET_PREFIX}.${10 + i}`,
    }));
    await lab.sh('gen', peers.map((p) => `ip addr add ${p.ip}/24 dev eth0`).join(' && '));
    const cfg = join(lab.dir, 'config.yaml');
    // The cluster config with the daemon's host and the peers as its nodes (not the generator).
    writeFileSync(cfg, siteConfig({ ...labSite(lab), hosts: [daemonHost, ...peers] }));
    const loaded = loadConfig(cfg);
    if (!loaded.config) throw new Error(`bench config invalid: ${JSON.stringify(loaded.diagnostics)}`);
    const daemon = await lab.startDaemon('h1', cfg);
    const gen = spawn(
      'ip',
      [
        'netns',
        'exec',
        lab.ns('gen'),
        process.execPath,
        sibling('./peers.js', import.meta.url),
        join(lab.dir, 'cluster.key'),
        lab.id,
        '239.255.76.67',
        '7607',
        '100',
        loaded.config.digest,
        ...peers.map((p) => `${p.name}=${p.ip}`),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let genOut = '';
    gen.stdout.on('data', (d: Buffer) => (genOut += d.toString()));
    await waitUntil(
      `all ${PEERS} peers Up`,
      async () => Object.values((await lab.status('h1')).nodes).filter((s) => s === 'Up').length === PEERS + 1,
    );
    await sleep(WARMUP_SECONDS * 1000);
    const before = procStat(daemon.pid!);
    const t0 = process.hrtime.bigint();
    const s0 = await lab.status('h1');
    await sleep(LOAD_SECONDS * 1000);
    const after = procStat(daemon.pid!);
    const s1 = await lab.status('h1');
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    await new Promise<void>((r) => {
      gen.once('exit', () => r());
      gen.kill('SIGTERM');
    });
    const cli = await cliTable(lab, 'h1');
    const nodeFloorKb = Number(
      (await lab.sh('h1', `${NO_TEST_RUNNER_HOOKS} node -e "console.log(process.memoryUsage().rss >> 10)"`)).stdout,
    );
    const tick = 100; // USER_HZ on Linux
    const cpuPct = ((after.cpuTicks - before.cpuTicks) / tick / seconds) * 100;
    const received = s1.counters.heartbeatsReceived - s0.counters.heartbeatsReceived;
    const dropped = Object.values(s1.counters.dropped).reduce((a, b) => a + b, 0);
    const up = Object.values(s1.nodes).filter((x) => x === 'Up').length;
    return `## Daemon cost: 100 ms heartbeats, ${PEERS} peers

One daemon (\`egress-natd run\`, the holder of the floating IPs) and ${PEERS} simulated peers in another namespace,
each from its own address, speaking the real protocol with the real key (bench/peers.ts): ${Math.round(received / seconds)} heartbeats/s
received and authenticated, ${dropped} dropped, ${up}/${PEERS + 1} nodes Up. CPU over ${LOAD_SECONDS} s from /proc/PID/stat (utime + stime,
all threads of the daemon), after ${WARMUP_SECONDS} s of warm-up.

| figure | value | target |
|---|---:|---|
| CPU, share of one core | ${cpuPct.toFixed(2)} % | ≤ 1 % ${mark(cpuPct <= 1)} |
| RSS at the end (steady) | ${(after.rssKb / 1024).toFixed(1)} MB | ≤ 60 MB ${mark(after.rssKb / 1024 <= 60)} |
| peak RSS (VmHWM) | ${(after.hwmKb / 1024).toFixed(1)} MB | ≤ 80 MB ${mark(after.hwmKb / 1024 <= 80)} |
| \`node -e 0\` for scale (RSS) | ${(nodeFloorKb / 1024).toFixed(1)} MB | |
| heartbeats sent by the peers | ${genOut.trim()} | |

### The command line at the runtime's floor

${cli}
`;
  } finally {
    await lab.destroy();
  }
}

/** The failover section of BENCHMARKS.md. */
export async function failoverSection(): Promise<string> {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  let text: string;
  try {
    const cfg = join(lab.dir, 'config.yaml');
    writeFileSync(cfg, clusterConfig(lab));
    await Promise.all(lab.hosts.map((h) => lab.startDaemon(h.name, cfg)));
    text = await failover(lab, cfg);
  } finally {
    await lab.destroy();
  }
  return text;
}
