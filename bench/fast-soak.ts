import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { settled } from '../lab/cluster.js';
import type { DaemonStatus, Lab } from '../lab/lab.js';
import { pct } from './unplanned.js';
import { WireGaps, type Gaps } from './wire-gaps.js';

// Fast mode's false failovers: the cluster runs with short timers while both cores are
// busy (stress-ng, one CPU worker per core, in a lab namespace) and every daemon is told to
// reload every RELOAD_S seconds; nothing else happens, so every ownership change and every
// node marked Down is false. What it costs and where the floor is: each daemon's CPU,
// the heartbeat gaps on the wire, event-loop stalls, and V8's GC pauses (--trace-gc).

const RELOAD_S = 30;
const TICKS_PER_S = 100; // USER_HZ

export interface SoakResult {
  readonly minutes: number;
  readonly load: { readonly before: number; readonly during: number; readonly after: number };
  /** SIGHUP rounds sent (one to every daemon each), and the fewest reloads any daemon applied. */
  readonly reloadsSent: number;
  readonly reloads: number;
  /** IPs added by any daemon (real ownership changes in the kernel). */
  readonly takeovers: number;
  /** Owner changes, by reason, as the daemon that counted the most saw them. */
  readonly failovers: number;
  /** `node X is Down` lines, over all daemons. */
  readonly downs: number;
  readonly stalls: { readonly count: number; readonly maxMs: number };
  readonly gc: { readonly count: number; readonly p99Ms: number; readonly maxMs: number };
  /** Each daemon's share of one core, %. */
  readonly cpu: Record<string, number>;
  /** Each daemon's event loop waiting for a CPU: ms per second, and on average each time it was woken. */
  readonly waits: Record<string, { readonly msPerS: number; readonly avgMs: number }>;
  readonly gaps: Gaps[];
  readonly lastReconcileMs: number;
}

/** The main thread's (the event loop's) time waiting on a run queue, ns, and its slices: how long it waited for a CPU. */
const runQueue = (pid: number): { waitNs: number; slices: number } => {
  const [, wait, slices] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
  return { waitNs: wait!, slices: slices! };
};

const ticks = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime
};

/** Runs the soak on a lab whose daemons run `cfg`; restarts them with --trace-gc first. */
export async function soak(
  lab: Lab,
  cfg: string,
  opts: { minutes: number; intervalMs: number; missed: number; port: number },
): Promise<SoakResult> {
  const names = lab.hosts.map((h) => h.name);
  await Promise.all(names.map((h) => lab.stopDaemon(h, 'SIGTERM')));
  const logFrom = new Map(names.map((h) => [h, readFileSync(lab.daemonLog(h), 'utf8').length]));
  await Promise.all(names.map((h) => lab.startDaemon(h, cfg, [], {}, ['--trace-gc'])));
  await settled(lab, names, 20_000, 200);
  const wire = new WireGaps(lab, opts.port);
  await wire.start();
  const before = await statuses(lab, names);
  const pids = new Map(names.map((h) => [h, lab.daemons.get(h)!.pid!]));
  const t0 = new Map([...pids].map(([h, pid]) => [h, ticks(pid)]));
  const q0 = new Map([...pids].map(([h, pid]) => [h, runQueue(pid)]));
  const start = process.hrtime.bigint();
  const loadBefore = loadavg()[0]!;
  const seconds = opts.minutes * 60;
  const stress = spawn(
    'ip',
    ['netns', 'exec', lab.ns('r'), 'stress-ng', '--cpu', '2', '--timeout', `${seconds + 30}s`, '--quiet'],
    { stdio: 'ignore' },
  );
  lab.onDestroy(() => void stress.kill('SIGKILL'));
  let reloads = 0;
  let loadDuring = 0;
  try {
    for (let s = RELOAD_S; s <= seconds; s += RELOAD_S) {
      await sleep(RELOAD_S * 1000);
      for (const h of names) lab.signalDaemon(h, 'SIGHUP');
      reloads++;
      loadDuring = Math.max(loadDuring, loadavg()[0]!);
      process.stderr.write(`fast soak: ${s} s of ${seconds}, load ${loadavg()[0]!.toFixed(1)}\n`);
    }
    await sleep((seconds % RELOAD_S) * 1000);
  } finally {
    const exited = new Promise((r) => stress.once('exit', r));
    stress.kill('SIGTERM');
    await exited;
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = Object.fromEntries(
    [...pids].map(([h, pid]) => [h, ((ticks(pid) - t0.get(h)!) / TICKS_PER_S / elapsed) * 100]),
  );
  const waits = Object.fromEntries(
    [...pids].map(([h, pid]) => {
      const [a, b] = [q0.get(h)!, runQueue(pid)];
      return [
        h,
        { msPerS: (b.waitNs - a.waitNs) / 1e6 / elapsed, avgMs: (b.waitNs - a.waitNs) / 1e6 / (b.slices - a.slices) },
      ];
    }),
  );
  await sleep(2000); // the last reload is applied everywhere
  const after = await statuses(lab, names);
  const gaps = await wire.stop(opts.intervalMs, opts.missed, new Map(lab.hosts.map((h) => [h.ip, h.name])));
  const logs = names.map((h) => readFileSync(lab.daemonLog(h), 'utf8').slice(logFrom.get(h)));
  const sum = (f: (s: DaemonStatus) => number) => names.reduce((n, h) => n + f(after.get(h)!) - f(before.get(h)!), 0);
  const failovers = (s: DaemonStatus) => Object.values(s.counters.failovers).reduce((a, b) => a + b, 0);
  const gcPauses = logs.flatMap((l) => [...l.matchAll(/MB, ([\d.]+) \/ [\d.]+ ms/g)].map((m) => Number(m[1])));
  const stallMs = logs.flatMap((l) => [...l.matchAll(/event loop stalled (\d+) ms/g)].map((m) => Number(m[1])));
  return {
    minutes: opts.minutes,
    load: { before: loadBefore, during: loadDuring, after: loadavg()[0]! },
    reloadsSent: reloads,
    reloads: Math.min(...names.map((h) => after.get(h)!.counters.reloads.ok - before.get(h)!.counters.reloads.ok)),
    takeovers: sum((s) => s.counters.takeovers),
    failovers: Math.max(...names.map((h) => failovers(after.get(h)!) - failovers(before.get(h)!))),
    downs: logs.reduce((n, l) => n + (l.match(/ is Down: /g)?.length ?? 0), 0),
    stalls: { count: sum((s) => s.counters.loopStalls), maxMs: Math.max(0, ...stallMs) },
    gc: {
      count: gcPauses.length,
      p99Ms: gcPauses.length ? pct(gcPauses, 99) : 0,
      maxMs: Math.max(0, ...gcPauses),
    },
    cpu,
    waits,
    gaps,
    lastReconcileMs: Math.max(...names.map((h) => after.get(h)!.counters.lastReconcileMs)),
  };
}

async function statuses(lab: Lab, names: string[]): Promise<Map<string, DaemonStatus>> {
  return new Map(await Promise.all(names.map(async (h) => [h, await lab.status(h)] as const)));
}
