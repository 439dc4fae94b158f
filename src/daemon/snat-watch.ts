import type { Logger } from 'pino';
import { dumpConnections, type Connection } from '../dataplane/conntrack-dump.js';
import { portPressure, type PortPressure } from './snat-ports.js';

// Watches SNAT port pressure on the floating IPs this node holds: a conntrack dump every
// CHECK_MS (it walks the whole table, so not per scrape), a warning in the log when the
// busiest destination of an IP passes the threshold (once, until it falls back), and the
// last result for the metrics. `status` asks for a fresh one.

const CHECK_MS = 30_000;

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
        const all = await Promise.all(ips.map((ip) => this.snatedTo(ip)));
        value = portPressure(all.flat(), ips);
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

  /** Connections SNATed to `ip`, filtered by the kernel; a kernel without the filter (before 5.9) gets the whole table. */
  private async snatedTo(ip: string): Promise<Connection[]> {
    try {
      return await dumpConnections(ip);
    } catch {
      return (await dumpConnections()).filter((c) => c.reply.dst === ip);
    }
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), CHECK_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
