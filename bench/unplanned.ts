import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLUSTER_FIPS, settled } from '../lab/cluster.js';
import { ECHO, type Lab } from '../lab/lab.js';
import { cutOff, nowNs, outage, startProber, waitForFlow } from '../lab/traffic.js';

// One unplanned failover of egress-natd, as bench/cluster.ts has always measured it, so
// that the failover section, the keepalived comparison and fast mode time the same thing:
// a prober in c1 sends a UDP request every PROBE_MS ms (each a new NAT mapping); the owner
// of the shop IP is cut off the segment (switch port down) and its daemon killed with
// SIGKILL; the figure is the time from the cut to the first answer with the shop IP.

export const PROBE_MS = 2;
export const { shop: SHOP } = CLUSTER_FIPS;

export const sorted = (xs: readonly number[]): number[] => [...xs].sort((a, b) => a - b);
/** The nearest-rank percentile: with 20 trials, p99 is the largest. */
export const pct = (xs: readonly number[], p: number): number =>
  sorted(xs)[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)]!;
export const median = (xs: readonly number[]): number => pct(xs, 50);

export interface Trial {
  readonly victim: string;
  readonly recoveredMs: number;
  readonly lost: number;
  /** Where the time went, from the new owner's log (ms after the cut); egress-natd only. */
  readonly phases?: Phases;
}

export interface Phases {
  /** The new owner marked the victim Down. */
  readonly downMs: number;
  /** The new owner logged `took over` (its reconcile done: macvlan, address, nft, first announcement). */
  readonly tookOverMs: number;
  /** The take-over alone (plan, then reconcile), as the daemon timed it. */
  readonly reconcileMs: number;
}

/** Reads the new owner's log lines after `cutWallMs` (pino's `time` is wall clock ms). */
export function phases(lab: Lab, victim: string, cutWallMs: number): Phases | undefined {
  for (const h of lab.hosts) {
    if (h.name === victim) continue;
    let text: string;
    try {
      text = readFileSync(lab.daemonLog(h.name), 'utf8');
    } catch {
      continue;
    }
    let down: number | undefined;
    for (const line of text.split('\n')) {
      if (!line.includes(`node ${victim} is Down`) && !line.includes('took over')) continue;
      const e = JSON.parse(line) as { time: number; msg: string; ms?: number; ips?: string[] };
      if (e.time < cutWallMs) continue;
      if (e.msg.startsWith(`node ${victim} is Down`)) down ??= e.time;
      else if (e.ips?.includes(SHOP) && down !== undefined)
        return { downMs: down - cutWallMs, tookOverMs: e.time - cutWallMs, reconcileMs: e.ms ?? NaN };
    }
  }
  return undefined;
}

/** What stays constant across the trials of one series. */
export interface UnplannedOptions {
  /** The heartbeat interval: the cut falls at a random phase of it (after one full interval of flow). */
  readonly intervalMs: number;
  /** How long answers must wait to be counted after they came back. */
  readonly tailMs?: number;
  /** The status poll while waiting for the cluster to settle; slower polls leave more CPU to the daemons. */
  readonly pollMs?: number;
  /** How long the cluster may take to settle before a trial (short timers on a loaded machine flap for a while). */
  readonly settleMs?: number;
}

/** Runs one trial on a lab whose daemons (all of `lab.hosts`) run with `cfg`; restarts the victim after it. */
export async function oursUnplanned(lab: Lab, cfg: string, opts: UnplannedOptions): Promise<Trial> {
  const names = lab.hosts.map((h) => h.name);
  const status = await settled(lab, names, opts.settleMs ?? 10_000, opts.pollMs ?? 25);
  const victim = status.floatingIPs[SHOP]!;
  const probe = await startProber(lab, 'c1', ECHO.inPolicy, PROBE_MS);
  try {
    await waitForFlow(probe.log, SHOP);
    await sleep(opts.intervalMs + Math.random() * opts.intervalMs); // a random phase of the interval
    const cut = await cutOff(lab, victim);
    const cutWallMs = Date.now() - Number(nowNs() - cut) / 1e6;
    await waitForFlow(probe.log, SHOP, 5000);
    await sleep(opts.tailMs ?? 400);
    const o = outage(await probe.stop(), cut, SHOP);
    if (o.recoveredMs === undefined || o.ips.some((ip) => ip !== SHOP))
      throw new Error(`unplanned failover from ${victim}: ${JSON.stringify(o)}`);
    return { victim, recoveredMs: o.recoveredMs, lost: o.lost, phases: phases(lab, victim, cutWallMs) };
  } finally {
    await probe.stop();
    await lab.restartDaemon(victim, cfg);
  }
}

/** `| name | trials | min | median | p99 | max | note |` in ms. */
export function msRow(name: string, xs: readonly number[], note: string): string {
  const f = (x: number) => x.toFixed(0);
  return `| ${name} | ${xs.length} | ${f(Math.min(...xs))} | ${f(median(xs))} | ${f(pct(xs, 99))} | ${f(Math.max(...xs))} | ${note} |`;
}

/** A table row per phase of egress-natd's failovers (medians and p99 over the trials that have them). */
export function phaseRows(trials: readonly Trial[], nftMs: readonly number[] = []): string {
  const ps = trials.flatMap((t) => (t.phases ? [{ ...t.phases, answerMs: t.recoveredMs }] : []));
  if (!ps.length) return '';
  const f = (x: number) => String(Math.round(x) || 0); // no "-0"
  const row = (name: string, xs: readonly number[]) =>
    `| ${name} | ${xs.length} | ${f(median(xs))} | ${f(pct(xs, 99))} |`;
  const rows: [string, number[]][] = [
    ['victim marked Down', ps.map((p) => p.downMs)],
    [
      'from Down to the take-over starting (election; a reconcile already running)',
      ps.map((p) => p.tookOverMs - p.reconcileMs - p.downMs),
    ],
    ['took over (reconcile done)', ps.map((p) => p.tookOverMs)],
    ['the take-over alone: plan + reconcile (the daemon times it)', ps.map((p) => p.reconcileMs)],
    ['first answer with the IP', ps.map((p) => p.answerMs)],
    ['from take-over to that answer', ps.map((p) => p.answerMs - p.tookOverMs)],
  ];
  return [
    "| egress-natd, from the cut (the new owner's log) | trials | median ms | p99 ms |",
    '|---|---:|---:|---:|',
    ...rows.map(([name, xs]) => row(name, xs)),
    ...(nftMs.length ? [row('one `nft` run, for scale (runs, not trials; a take-over makes two)', nftMs)] : []),
  ].join('\n');
}

/**
 * How long one `nft` run takes in a lab host (process start included, timed inside the
 * namespace): a take-over runs it twice before its macvlan comes up (read the table as
 * JSON, then the transaction).
 */
export async function nftRunMs(lab: Lab, host: string, runs = 10): Promise<number[]> {
  const script = 'a=$(date +%s%N); nft -j -t list table inet egress_natd >/dev/null; b=$(date +%s%N); echo $((b-a))';
  const out: number[] = [];
  for (let i = 0; i < runs; i++) out.push(Number((await lab.sh(host, script)).stdout.trim()) / 1e6);
  return out;
}
