import { spawn, type ChildProcess } from 'node:child_process';
import { eachLine, type Lab } from './lab.js';
import { labScript, NODE } from './paths.js';

// Long-lived connections through a floating IP (streams.ts), for the connection survival
// tests and benchmarks: start them, move the IP, then ask each whether it lived.

export const STREAMS_PORT = 9000;

export interface FlowResult {
  readonly id: string;
  readonly kind: 'push' | 'echo' | 'idle' | 'udp';
  readonly alive: boolean;
  /** Every "IP:port" the server saw this flow come from: one if the mapping held. */
  readonly seen: readonly string[];
  /** The longest time between two messages received (for idle: from its use to the answer). */
  readonly gapMs: number;
  readonly error?: string;
}

export interface Streams {
  /** The idle connections send now. */
  useIdle(): void;
  /** Ends the client and reads each flow's fate. */
  results(): Promise<FlowResult[]>;
}

/** Starts the streams server in the router (once per lab). */
export async function startStreamsServer(lab: Lab): Promise<void> {
  const child = spawn(
    'ip',
    ['netns', 'exec', lab.ns('r'), ...NODE, labScript('streams'), 'server', String(STREAMS_PORT)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  lab.onDestroy(() => void child.kill('SIGKILL'));
  await started(child, 'listening');
}

function started(child: ChildProcess, word: string): Promise<void> {
  return new Promise((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`streams did not say "${word}"`)), 10_000);
    eachLine(child.stdout!, (l) => {
      if (l.startsWith(word)) {
        clearTimeout(t);
        ok();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      fail(new Error(`streams exited ${code}`));
    });
  });
}

/** Opens `push` server-push, `echo` client-echo and `idle` idle TCP connections and one UDP flow from `from` to `dest`. */
export async function startStreams(
  lab: Lab,
  from: string,
  dest: string,
  counts: { push: number; echo: number; idle: number },
): Promise<Streams> {
  const args = [dest, STREAMS_PORT, counts.push, counts.echo, counts.idle].map(String);
  const child = spawn('ip', ['netns', 'exec', lab.ns(from), ...NODE, labScript('streams'), 'client', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  lab.onDestroy(() => void child.kill('SIGKILL'));
  const lines: string[] = [];
  eachLine(child.stdout, (l) => lines.push(l));
  await new Promise<void>((ok, fail) => {
    child.once('spawn', ok);
    child.once('error', fail);
  });
  return {
    useIdle: () => void child.kill('SIGUSR1'),
    results: () =>
      new Promise((resolve) => {
        child.once('exit', () =>
          resolve(lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as FlowResult)),
        );
        child.kill('SIGTERM');
      }),
  };
}

/** What a test reports: alive per kind, and the longest stall of each flow. */
export function summary(results: readonly FlowResult[]): string {
  const kinds = ['push', 'echo', 'idle', 'udp'] as const;
  const alive = kinds
    .map((k) => {
      const of = results.filter((r) => r.kind === k);
      return `${k} ${of.filter((r) => r.alive).length}/${of.length}`;
    })
    .join(', ');
  const gaps = results.map((r) => `${r.id} ${Math.round(r.gapMs)}`).join(' ');
  return `alive: ${alive}; longest stall per connection (ms): ${gaps}`;
}

export interface ChurnResult {
  readonly ok: number;
  readonly failed: number;
  /** When each failed connection began (monotonic ms, as nowMs()). */
  readonly failedAt: readonly number[];
}

/** Monotonic ms, the clock streams.ts reports in. */
export const nowMs = (): number => Number(process.hrtime.bigint() / 1_000_000n);

/** Runs `rate` new connections a second for `seconds` from `from` to `dest`; resolves when all ended. */
export function churn(lab: Lab, from: string, dest: string, rate: number, seconds: number): Promise<ChurnResult> {
  const args = [dest, STREAMS_PORT, rate, seconds].map(String);
  const child = spawn('ip', ['netns', 'exec', lab.ns(from), ...NODE, labScript('streams'), 'churn', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  lab.onDestroy(() => void child.kill('SIGKILL'));
  const failedAt: number[] = [];
  let result: [number, number] | undefined;
  eachLine(child.stdout, (l) => {
    const [kind, a, b] = l.split(' ');
    if (kind === 'f') failedAt.push(Number(a));
    else if (kind === 'done') result = [Number(a), Number(b)];
  });
  return new Promise((resolve, reject) =>
    child.once('exit', (code) =>
      result
        ? resolve({ ok: result[0], failed: result[1], failedAt })
        : reject(new Error(`churn exited ${code} without a result`)),
    ),
  );
}
