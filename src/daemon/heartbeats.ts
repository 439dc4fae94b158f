import type { Logger } from 'pino';
import type { Config, NodeSpec } from '../config/model.js';
import type { ClusterNode } from '../cluster/node.js';
import { openTransport, type Transport, type TransportOptions } from '../cluster/transport.js';
import { formatAddress } from '../util/ip.js';
import { monotonicMs } from '../util/time.js';
import type { Counters } from './telemetry.js';

// Heartbeat I/O: the socket, the send interval and the expiry timer around a ClusterNode.
// What a heartbeat means is decided in src/cluster; this file moves bytes and time.

export function transportOptions(config: Config, self: NodeSpec): TransportOptions {
  const hb = config.cluster.heartbeat;
  return {
    mode: hb.transport,
    port: hb.port,
    local: formatAddress(self.address),
    ...(hb.group ? { group: formatAddress(hb.group) } : {}),
    peers: config.nodes.filter((n) => n.name !== self.name).map((n) => formatAddress(n.address)),
  };
}

const sameOptions = (a: TransportOptions, b: TransportOptions): boolean => JSON.stringify(a) === JSON.stringify(b);

/** An expiry timer this late (ms) gives the socket one more turn of the loop before it decides. */
const LATE_MS = 20;

const afterSocketReads = (turns: number, fn: () => void): void =>
  void setImmediate(() => (turns > 1 ? afterSocketReads(turns - 1, fn) : fn()));

export interface HeartbeatEvents {
  /** A peer's state changed (up, flags, claims or digest), or peers went Down. */
  peersChanged(): void;
}

export class Heartbeats {
  private transport?: Transport;
  private sendTimer?: NodeJS.Timeout;
  private intervalMs = 0;
  private expiryTimer?: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly node: ClusterNode,
    private readonly counters: Counters,
    private readonly log: Logger,
    private readonly events: HeartbeatEvents,
  ) {}

  /** Opens the socket for the node's config and starts sending. */
  async open(): Promise<void> {
    this.transport = await this.openTransport(transportOptions(this.node.config, this.node.self));
    this.restartSending();
  }

  /**
   * Before a reload is committed: the socket the new config needs, if it needs another.
   * Opened while the old one still runs, so a reload never goes deaf; on the same
   * address and port it shares the old one's socket (which no one else may share).
   */
  async prepare(config: Config, self: NodeSpec): Promise<Transport | undefined> {
    const options = transportOptions(config, self);
    const current = this.transport;
    return current && sameOptions(options, current.options) ? undefined : this.openTransport(options, current);
  }

  /** After the node took the new config: swap to the prepared socket, follow the interval, re-arm expiry. */
  reconfigured(prepared: Transport | undefined): void {
    if (prepared) {
      this.transport?.close();
      this.transport = prepared;
    }
    if (this.node.config.cluster.heartbeat.intervalMs !== this.intervalMs) this.restartSending();
    this.armExpiry();
  }

  private openTransport(options: TransportOptions, current?: Transport): Promise<Transport> {
    return openTransport(
      options,
      (msg, source) => this.onDatagram(msg, source),
      (e) => this.log.debug({ err: e.message }, 'heartbeat socket'),
      current,
    );
  }

  private restartSending(): void {
    clearInterval(this.sendTimer);
    this.intervalMs = this.node.config.cluster.heartbeat.intervalMs;
    this.sendTimer = setInterval(() => this.send(), this.intervalMs);
  }

  /** Sends a heartbeat now (claims or flags changed: peers must not wait for the interval). */
  send(): void {
    if (!this.transport) return;
    this.transport.send(this.node.heartbeat());
    this.counters.heartbeatsSent++;
  }

  private onDatagram(datagram: Buffer, source: string): void {
    // Nothing from the network may throw out of here.
    try {
      const r = this.node.receive(datagram, source, monotonicMs());
      if (!r.accepted) {
        this.counters.dropped[r.reason]++;
        if (r.authPeer !== undefined) {
          // A configured peer with another key: said loudly once it starts (telemetry.ts), not per datagram.
          const n = this.counters.authFailures;
          n[r.authPeer] = (n[r.authPeer] ?? 0) + 1;
          if (r.changed) {
            if (!this.expiryTimer) this.armExpiry();
            this.events.peersChanged();
          }
        }
        // Logged at debug only: a flood of junk must not flood the journal.
        return void this.log.debug({ reason: r.reason, source }, 'heartbeat dropped');
      }
      this.counters.heartbeatsReceived++;
      if (!this.expiryTimer) this.armExpiry();
      if (r.changed) {
        this.log.debug(
          { peer: r.peer.name, up: r.peer.up, flags: r.peer.flags, claims: r.peer.claims },
          'peer changed',
        );
        this.events.peersChanged();
      }
    } catch (e) {
      this.log.error({ err: (e as Error).message, source }, 'heartbeat handling failed');
    }
  }

  /**
   * One timer, at the earliest time a peer can time out. A heartbeat only ever moves a
   * peer's deadline later, so receiving never re-arms it: it fires, expires who is
   * due, and arms itself for the next deadline. Exact, and a few wake-ups a second.
   */
  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    const next = this.node.nextExpiry();
    if (next === undefined || this.closed) return;
    this.expiryTimer = setTimeout(
      () => {
        const lateMs = monotonicMs() - next;
        // Timers run before the loop reads its sockets: heartbeats that arrived while the
        // loop was busy are read first (each setImmediate turn passes the poll phase once),
        // so this node's own lag never makes a peer Down.
        afterSocketReads(lateMs > LATE_MS ? 2 : 1, () => {
          this.expiryTimer = undefined;
          if (this.closed) return;
          const { down, changed } = this.node.expire(monotonicMs());
          for (const name of down)
            this.log.info({ peer: name }, `node ${name} is Down: no heartbeat for ${this.node.downAfterMs} ms`);
          if (changed) this.events.peersChanged();
          this.armExpiry();
        });
      },
      Math.max(0, Math.ceil(next - monotonicMs())),
    );
  }

  /** Stops expiring peers (a leaving node decides nothing more from timeouts). */
  stopExpiry(): void {
    this.closed = true;
    clearTimeout(this.expiryTimer);
  }

  close(): void {
    this.stopExpiry();
    clearInterval(this.sendTimer);
    this.transport?.close();
  }
}
