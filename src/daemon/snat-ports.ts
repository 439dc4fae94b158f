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

/** Per floating IP in `ips`: what its connections use of the SNAT port range. */
export function portPressure(connections: readonly Connection[], ips: readonly string[]): Record<string, PortPressure> {
  const wanted = new Set(ips);
  const perIP = new Map<string, Map<string, number>>(ips.map((ip) => [ip, new Map()]));
  const total = new Map<string, number>(ips.map((ip) => [ip, 0]));
  for (const { orig, reply } of connections) {
    // SNATed: the answer goes back to the floating IP, and the original source was another address.
    const ip = reply.dst;
    if (!wanted.has(ip) || orig.src === ip) continue;
    total.set(ip, total.get(ip)! + 1);
    const key = `${orig.dst}:${orig.dport}/${PROTOCOLS[orig.proto] ?? orig.proto}`;
    const byDestination = perIP.get(ip)!;
    byDestination.set(key, (byDestination.get(key) ?? 0) + 1);
  }
  const out: Record<string, PortPressure> = {};
  for (const ip of ips) {
    let busiest: PortPressure['busiest'] = null;
    for (const [destination, ports] of [...perIP.get(ip)!].sort(([a], [b]) => a.localeCompare(b)))
      if (!busiest || ports > busiest.ports) busiest = { destination, ports, usage: ports / SNAT_PORTS };
    const warning =
      busiest && busiest.usage > PORT_WARN_RATIO
        ? `${ip} uses ${busiest.ports} of ${SNAT_PORTS} source ports toward ${busiest.destination} (${Math.round(busiest.usage * 100)} %): new connections there will fail once they run out`
        : undefined;
    out[ip] = { connections: total.get(ip)!, busiest, ...(warning ? { warning } : {}) };
  }
  return out;
}
