import type { Connection } from '../dataplane/conntrack-dump.js';

// SNAT port pressure (pure; the daemon feeds it a conntrack dump). Every connection SNATed
// to a floating IP needs a source port of that IP that is free for its destination
// (address, port, protocol): toward one busy destination an IP has at most the port range,
// however many destinations it talks to. The busiest destination is the one to watch.

/** `snat ip to` without a port range maps source ports ≥ 1024 into 1024-65535. */
export const SNAT_PORTS = 65535 - 1024 + 1;
/** Above this share of the port range toward one destination, `status` and the log warn. */
export const PORT_WARN_RATIO = 0.8;

const PROTOCOLS: Readonly<Record<number, string>> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 132: 'sctp' };

export interface PortPressure {
  /** Connections tracked with the floating IP as their translated source. */
  readonly connections: number;
  /** The destination with the most of them: `address:port/protocol`, and how many ports of the range it takes. */
  readonly busiest: { readonly destination: string; readonly ports: number; readonly usage: number } | null;
  /** Set when the busiest destination takes more than PORT_WARN_RATIO of the range. */
  readonly warning?: string;
}

/** Counts connections as a dump streams them; `result()` is per floating IP in `ips`. */
export class PortTally {
  private readonly perIP: Map<string, Map<string, number>>;
  private readonly total: Map<string, number>;

  constructor(private readonly ips: readonly string[]) {
    this.perIP = new Map(ips.map((ip) => [ip, new Map<string, number>()]));
    this.total = new Map(ips.map((ip) => [ip, 0]));
  }

  add({ orig, reply }: Connection): void {
    // SNATed: the answer goes back to the floating IP, and the original source was another address.
    const ip = reply.dst;
    const byDestination = this.perIP.get(ip);
    if (!byDestination || orig.src === ip) return;
    this.total.set(ip, this.total.get(ip)! + 1);
    const key = `${orig.dst}:${orig.dport}/${PROTOCOLS[orig.proto] ?? orig.proto}`;
    byDestination.set(key, (byDestination.get(key) ?? 0) + 1);
  }

  result(): Record<string, PortPressure> {
    const out: Record<string, PortPressure> = {};
    for (const ip of this.ips) {
      let busiest: PortPressure['busiest'] = null;
      // One pass, no sort: 100,000 destinations sorted by locale took 150 ms of the event loop.
      for (const [destination, ports] of this.perIP.get(ip)!)
        if (!busiest || ports > busiest.ports || (ports === busiest.ports && destination < busiest.destination))
          busiest = { destination, ports, usage: ports / SNAT_PORTS };
      const warning =
        busiest && busiest.usage > PORT_WARN_RATIO
          ? `${ip} uses ${busiest.ports} of ${SNAT_PORTS} source ports toward ${busiest.destination} (${Math.round(busiest.usage * 100)} %): new connections there will fail once they run out`
          : undefined;
      out[ip] = { connections: this.total.get(ip)!, busiest, ...(warning ? { warning } : {}) };
    }
    return out;
  }
}

/** Per floating IP in `ips`: what its connections use of the SNAT port range. */
export function portPressure(connections: readonly Connection[], ips: readonly string[]): Record<string, PortPressure> {
  const tally = new PortTally(ips);
  for (const c of connections) tally.add(c);
  return tally.result();
}
