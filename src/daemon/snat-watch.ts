import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { tiedToUs } from '../dataplane/tied.js';
import type { PortPressure } from './snat-ports.js';

// Watches SNAT port pressure on the floating IPs this node holds: a conntrack dump every
// CHECK_MS (it walks the whole table, so not per scrape), a warning in the log when the
// busiest destination of an IP passes the threshold (once, until it falls back), and the
// last result for the metrics. `status` asks for a fresh one. The dump is read and counted
// in a child process (snat-check.ts): with 100,000 connections that takes about a second,
// which in the daemon's event loop stalled its heartbeats and got it called Down.

const CHECK_MS = 30_000;
const CHECKER = fileURLToPath(new URL('./snat-check.js', import.meta.url));
const run = promisify(execFile);

/** The port pressure of each IP, counted by a child process (tied to this one's life). */
async function countInChild(ips: readonly string[]): Promise<Record<string, PortPressure>> {
  const [cmd, args] = tiedToUs([process.execPath, CHECKER, ...ips]);
  const { stdout } = await run(cmd, args, { timeout: 20_000, maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as Record<string, PortPressure>;
}

export class SnatWatch {
  private timer?: NodeJS.Timeout;
  private lastValue: Readonly<Record<string, PortPressure>> = {};
  private readonly warned = new Set<string>();

  constructor(
    private readonly held: () => readonly string[],
    private readonly log: Logger,
  ) {}

  /** The result of the last check (IPs held then). */
  get last(): Readonly<Record<string, PortPressure>> {
    return this.lastValue;
  }

  /** Checks now; undefined (logged) if the conntrack table cannot be read. Never throws. */
  async check(): Promise<Readonly<Record<string, PortPressure>> | undefined> {
    const ips = [...this.held()].sort();
    let value: Record<string, PortPressure> = {};
    if (ips.length)
      try {
        value = await countInChild(ips);
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'cannot read the conntrack table for SNAT port pressure');
        return undefined;
      }
    this.lastValue = value;
    for (const [ip, p] of Object.entries(value))
      if (p.warning && !this.warned.has(ip)) {
        this.warned.add(ip);
        this.log.warn({ ip, busiest: p.busiest }, p.warning);
      }
    for (const ip of [...this.warned].filter((x) => !value[x]?.warning)) {
      this.warned.delete(ip);
      this.log.info({ ip }, `SNAT port pressure on ${ip} is below the threshold again`);
    }
    return value;
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), CHECK_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
