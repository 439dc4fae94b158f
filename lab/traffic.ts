import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { eachLine, ECHO_PORT, type Lab } from './lab.js';
import { labScript, NODE } from './paths.js';

// Continuous traffic from a lab namespace (prober.ts) and what it tells:
// when answers stopped and came back, with which source IP, and how many were lost.

export interface Reply {
  readonly seq: number;
  readonly at: bigint;
  readonly ip: string;
}
export interface ProbeLog {
  readonly sent: ReadonlyMap<number, bigint>;
  readonly replies: readonly Reply[];
}

export interface Prober {
  /** What has come in so far (live). */
  readonly log: () => ProbeLog;
  stop(): Promise<ProbeLog>;
}

export const nowNs = (): bigint => process.hrtime.bigint();

export async function startProber(lab: Lab, from: string, dest: string, intervalMs = 5): Promise<Prober> {
  const child = spawn(
    'ip',
    ['netns', 'exec', lab.ns(from), ...NODE, labScript('prober'), dest, String(ECHO_PORT), String(intervalMs)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const sent = new Map<number, bigint>();
  const replies: Reply[] = [];
  eachLine(child.stdout, (l) => {
    const [kind, seq, at, ip] = l.split(' ');
    if (kind === 's') sent.set(Number(seq), BigInt(at!));
    else if (kind === 'r') replies.push({ seq: Number(seq), at: BigInt(at!), ip: ip! });
  });
  await new Promise<void>((ok, fail) => {
    child.once('spawn', ok);
    child.once('error', fail);
  });
  lab.onDestroy(() => void child.kill('SIGKILL'));
  return {
    log: () => ({ sent, replies }),
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve({ sent, replies });
        child.once('exit', () => resolve({ sent, replies }));
        child.kill('SIGTERM');
      }),
  };
}

/** Waits until the prober has seen an answer with `ip` (traffic flows), or throws. */
export async function waitForFlow(log: () => ProbeLog, ip: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  const start = nowNs();
  while (Date.now() < end) {
    if (log().replies.some((r) => r.at > start && r.ip === ip)) return;
    await sleep(20);
  }
  throw new Error(`no answer with source ${ip} within ${timeoutMs} ms`);
}

export interface Outage {
  /** ms from `since` to the first answer, with `ip`, to a request sent after `since`; undefined if none. */
  readonly recoveredMs: number | undefined;
  /** Requests sent after `since` (and at least 300 ms before the end) that got no answer. */
  readonly lost: number;
  readonly sent: number;
  /** Source IPs of answers after `since`, in order of first appearance. */
  readonly ips: readonly string[];
}

export function outage(log: ProbeLog, since: bigint, ip: string): Outage {
  const answered = new Set(log.replies.map((r) => r.seq));
  const after = [...log.sent].filter(([, t]) => t >= since);
  const last = after.length ? after[after.length - 1]![1] : since;
  const counted = after.filter(([, t]) => last - t > 300_000_000n);
  const first = log.replies
    .filter((r) => r.ip === ip && (log.sent.get(r.seq) ?? 0n) >= since)
    .sort((a, b) => (a.at < b.at ? -1 : 1))[0];
  return {
    recoveredMs: first ? Number(first.at - since) / 1e6 : undefined,
    lost: counted.filter(([seq]) => !answered.has(seq)).length,
    sent: counted.length,
    ips: [...new Set(log.replies.filter((r) => r.at >= since).map((r) => r.ip))],
  };
}

/** Longest time between two answers (ms) in [from, to]: how long traffic stood still. */
export function longestGap(log: ProbeLog, from: bigint, to?: bigint): number {
  const at = log.replies
    .map((r) => r.at)
    .filter((x) => x >= from && (to === undefined || x <= to))
    .sort((a, b) => (a < b ? -1 : 1));
  let gap = 0;
  for (let i = 1; i < at.length; i++) gap = Math.max(gap, Number(at[i]! - at[i - 1]!) / 1e6);
  return gap;
}

/** Cuts `host` off the segment (its switch port down) and kills its daemon with SIGKILL; returns the time of the cut. */
export async function cutOff(lab: Lab, host: string): Promise<bigint> {
  await lab.setPort(host, false);
  const cut = nowNs();
  await lab.stopDaemon(host, 'SIGKILL');
  return cut;
}
