import type { Logger } from 'pino';
import { eachSnatConnection } from '../dataplane/conntrack-dump.js';
import { PortTally, type PortPressure } from './snat-ports.js';

// Watches SNAT port pressure on the floating IPs this node holds: a conntrack dump every
// CHECK_MS (it walks the whole table, so not per scrape), a warning in the log when the
// busiest destination of an IP passes the threshold (once, until it falls back), and the
// last result for the metrics. `status` asks for a fresh one; callers that ask while a
// check runs share it (a dump of a big table takes a while, in small slices of the loop).

const CHECK_MS = 30_000;

/**
 * Of the connections SNATed to `ips`: one walk of the table for all of them, the kernel
 * passing only source-NATed entries (the walk, not what it passes, is most of the cost:
 * 10 ms for 262,144 empty buckets). A kernel without that filter (an older one) passes
 * them all; PortTally keeps only SNATs to `ips`.
 */
async function pressureOn(ips: readonly string[]): Promise<Record<string, PortPressure>> {
  const tally = new PortTally(ips);
  await eachSnatConnection((c) => tally.add(c));
  return tally.result();
}

export class SnatWatch {
  private timer?: NodeJS.Timeout;
  private lastValue: Readonly<Record<string, PortPressure>> = {};
  private readonly warned = new Set<string>();
  private running?: Promise<Readonly<Record<string, PortPressure>> | undefined>;

  constructor(
    private readonly held: () => readonly string[],
    private readonly log: Logger,
  ) {}

  /** The result of the last check (IPs held then). */
  get last(): Readonly<Record<string, PortPressure>> {
    return this.lastValue;
  }

  /** Checks now (or joins the check under way); undefined (logged) if the conntrack table cannot be read. Never throws. */
  check(): Promise<Readonly<Record<string, PortPressure>> | undefined> {
    this.running ??= this.checkOnce().finally(() => (this.running = undefined));
    return this.running;
  }

  private async checkOnce(): Promise<Readonly<Record<string, PortPressure>> | undefined> {
    const ips = [...this.held()].sort();
    let value: Record<string, PortPressure> = {};
    try {
      if (ips.length) value = await pressureOn(ips);
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
