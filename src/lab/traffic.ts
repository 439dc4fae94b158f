import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ECHO_PORT, REPO, type Lab } from './lab.js';

// Continuous traffic from a lab namespace (src/lab/prober.ts) and what it tells:
// when answers stopped and came back, with which source IP, and how many were lost.

export interface Reply { readonly seq: number; readonly at: bigint; readonly ip: string }
export interface ProbeLog { readonly sent: ReadonlyMap<number, bigint>; readonly replies: readonly Reply[] }

export interface Prober {
  /** What has come in so far (live). */
  log(): ProbeLog;
  stop(): Promise<ProbeLog>;
}

export const nowNs = (): bigint => process.hrtime.bigint();

export async function startProber(lab: Lab, from: string, dest: string, intervalMs = 5): Promise<Prober> {
  const child = spawn('ip', ['netns', 'exec', lab.ns(from), process.execPath, join(REPO, 'dist/src/lab/prober.js'), dest, String(ECHO_PORT), String(intervalMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const sent = new Map<number, bigint>();
  const replies: Reply[] = [];
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const l of lines) {
      const [kind, seq, at, ip] = l.split(' ');
      if (kind === 's') sent.set(Number(seq), BigInt(at!));
      else if (kind === 'r') replies.push({ seq: Number(seq), at: BigInt(at!), ip: ip! });
    }
  });
  await new Promise<void>((ok, fail) => { child.once('spawn', ok); child.once('error', fail); });
  lab.onDestroy(() => void child.kill('SIGKILL'));
  return {
    log: () => ({ sent, replies }),
    stop: () => new Promise((resolve) => {
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
    await new Promise((r) => setTimeout(r, 20));
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
  const first = log.replies.filter((r) => r.ip === ip && (log.sent.get(r.seq) ?? 0n) >= since).sort((a, b) => (a.at < b.at ? -1 : 1))[0];
  return {
    recoveredMs: first ? Number(first.at - since) / 1e6 : undefined,
    lost: counted.filter(([seq]) => !answered.has(seq)).length,
    sent: counted.length,
    ips: [...new Set(log.replies.filter((r) => r.at >= since).map((r) => r.ip))],
  };
}
