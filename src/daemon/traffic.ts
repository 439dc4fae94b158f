import type { Config } from '../config/model.js';
import type { CounterValue } from '../dataplane/nft.js';
import { floatingIPs } from '../plan/desired.js';
import { egressIPCounter, policyCounter, RELAY_REASONS, relayCounter, type RelayReason } from '../plan/naming.js';

// What flows, from the kernel's named counters (docs/datapath.md, "Counters"), as
// `status`, `egress list` and the metrics show it. Pure: the config and one read of the
// counters. Every number is this node's: the cluster's total is the sum over nodes.

export interface Counted {
  readonly packets: number;
  readonly bytes: number;
}

export interface EgressIPTraffic extends Counted {
  /** Leaving this node with the IP as source: what it SNATed as the IP's owner (packets, bytes). */
  readonly connections: number;
  /** This node's selected packets dropped while the IP had no owner (noGateway: drop). */
  readonly noGatewayDropped: number;
  /** Packets its relay guard dropped, by reason, while this node owns the IP (the counters restart with each ownership). */
  readonly relayDropped: Readonly<Record<RelayReason, number>>;
}

export interface Traffic {
  readonly egressIPs: Readonly<Record<string, EgressIPTraffic>>;
  /** What this node's own sources (workloads, processes) sent into each policy. */
  readonly policies: Readonly<Record<string, Counted>>;
}

export function traffic(config: Config, counters: ReadonlyMap<string, CounterValue>): Traffic {
  const get = (name: string): CounterValue => counters.get(name) ?? { packets: 0, bytes: 0 };
  const egressIPs: Record<string, EgressIPTraffic> = {};
  for (const f of floatingIPs(config)) {
    const out = get(egressIPCounter(f.ip, 'out'));
    egressIPs[f.text] = {
      packets: out.packets,
      bytes: out.bytes,
      connections: get(egressIPCounter(f.ip, 'new')).packets,
      noGatewayDropped: get(egressIPCounter(f.ip, 'nogw')).packets,
      relayDropped: Object.fromEntries(RELAY_REASONS.map((r) => [r, get(relayCounter(f.ip, r)).packets])) as Record<
        RelayReason,
        number
      >,
    };
  }
  const policies: Record<string, Counted> = {};
  for (const p of config.policies) {
    const { packets, bytes } = get(policyCounter(p.name));
    policies[p.name] = { packets, bytes };
  }
  return { egressIPs, policies };
}
