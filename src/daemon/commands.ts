import type { ClusterNode } from '../cluster/node.js';
import type { SyncStats } from './connection-sync.js';
import type { Request } from './control.js';
import type { FailoverHistory } from './history.js';
import { egressList, status } from './status.js';
import type { PortPressure } from './snat-ports.js';
import type { Traffic } from './traffic.js';
import { viewOf, type Counters } from './telemetry.js';

// What the control socket's commands do (the socket itself is control.ts).

export interface ControlTarget {
  readonly node: ClusterNode;
  readonly counters: Counters;
  readonly history: FailoverHistory;
  /** What flows through this node (the kernel's named counters); undefined when they cannot be read. */
  traffic(): Promise<Traffic | undefined>;
  /** SNAT port pressure on the IPs this node holds, checked now; undefined when conntrack cannot be read. */
  snatPorts(): Promise<Readonly<Record<string, PortPressure>> | undefined>;
  /** Connection sync's health; undefined when it is disabled. */
  connectionSync?(): SyncStats | undefined;
  /** Sets this node's draining flag, tells the peers and decides again. */
  setDraining(draining: boolean): void;
  /** Resolves once `done()` holds after a pass of the reconcile loop that began after the call, or after `timeoutMs`. */
  afterLoop(done: () => boolean, timeoutMs: number): Promise<void>;
}

/** Extra time a drain waits beyond one Down interval for the new owners to claim. */
const DRAIN_GRACE_MS = 500;

export function controlHandler(t: ControlTarget): (r: Request) => Promise<unknown> {
  return async (r) => {
    switch (r.cmd) {
      case 'status': {
        // Two dumps from the kernel (nft counters, conntrack): at once, not one after the other.
        const [traffic, snatPorts] = await Promise.all([t.traffic(), t.snatPorts()]);
        return {
          ...status(t.node.config, viewOf(t.node)),
          history: t.history.list(),
          traffic: traffic ?? null,
          snatPorts: snatPorts ?? null,
          connectionSync: t.connectionSync?.() ?? null,
          counters: t.counters,
          ready: t.node.condition.listened,
        };
      }
      case 'egress-list':
        return egressList(t.node.config, viewOf(t.node), await t.traffic());
      case 'drain':
      case 'undrain':
        return drain(t, r.cmd === 'drain');
    }
  };
}

/** Drain waits (bounded) until what this node held has moved, and says where it went. */
async function drain(t: ControlTarget, draining: boolean): Promise<unknown> {
  const { node } = t;
  const before = [...node.held];
  t.setDraining(draining);
  // Done when everything still held is this node's by election (no one else could take it).
  const handedOver = () => [...node.held].every((ip) => node.owners.get(ip) === node.self.name);
  if (draining) await t.afterLoop(handedOver, node.downAfterMs + DRAIN_GRACE_MS);
  return {
    draining,
    handedOver: Object.fromEntries(before.map((ip) => [ip, node.owners.get(ip) ?? null])),
    holds: [...node.held].sort(),
  };
}
