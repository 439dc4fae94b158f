import type { Config } from '../config/model.js';
import { formatAddress } from '../util/ip.js';
import type { Claim, LiveNode } from './ownership.js';
import { Flag, type DropReason, type Heartbeat } from './protocol.js';

// Who is Up, from the heartbeats that arrive. Time is passed in, so this is tested
// without clocks; the daemon feeds it from the socket and a timer.

export interface Peer {
  readonly name: string;
  up: boolean;
  incarnation: bigint;
  seq: bigint;
  flags: number;
  claims: readonly string[];
  digest: string;
  /** ms (monotonic) of the last accepted heartbeat. */
  lastSeen: number;
  /** Why it is Down: never heard, timed out, or it said it was leaving. */
  downReason: 'never-seen' | 'timeout' | 'leaving' | undefined;
}

export type Receipt =
  | { readonly accepted: true; readonly changed: boolean; readonly peer: Peer }
  | { readonly accepted: false; readonly reason: DropReason };

export const isEligible = (flags: number): boolean =>
  (flags & Flag.READY) !== 0 && (flags & (Flag.DRAINING | Flag.NO_CARRIER | Flag.LEAVING)) === 0;
export const isJoining = (flags: number): boolean =>
  (flags & (Flag.READY | Flag.DRAINING | Flag.NO_CARRIER | Flag.LEAVING)) === 0;
export const mayKeep = (flags: number): boolean =>
  (flags & Flag.DRAINING) !== 0 && (flags & (Flag.NO_CARRIER | Flag.LEAVING)) === 0;
/** What the election needs of a node, from its flags (a peer's as heard, this node's own as sent). */
export const liveNode = (name: string, flags: number): LiveNode => ({
  name,
  eligible: isEligible(flags),
  mayKeep: mayKeep(flags),
  joining: isJoining(flags),
});

export class Membership {
  private readonly peers = new Map<string, Peer>();
  private readonly addresses = new Map<string, string>();
  private timeout = 0;

  constructor(
    config: Config,
    readonly self: string,
  ) {
    this.reconfigure(config);
  }

  get timeoutMs(): number {
    return this.timeout;
  }

  /**
   * A reloaded config: peers that stay keep what was heard from them (a reload must not
   * make anyone Down); new nodes start never-seen; removed nodes are forgotten. A node
   * whose address changed starts over, since its old heartbeats came from elsewhere.
   */
  reconfigure(config: Config): void {
    this.timeout = config.cluster.heartbeat.intervalMs * config.cluster.heartbeat.missed;
    const before = new Map(this.addresses);
    this.addresses.clear();
    for (const n of config.nodes) this.addresses.set(n.name, formatAddress(n.address));
    for (const name of [...this.peers.keys()])
      if (!this.addresses.has(name) || before.get(name) !== this.addresses.get(name)) this.peers.delete(name);
    for (const name of this.addresses.keys()) {
      if (name === this.self || this.peers.has(name)) continue;
      this.peers.set(name, {
        name,
        up: false,
        incarnation: 0n,
        seq: 0n,
        flags: 0,
        claims: [],
        digest: '',
        lastSeen: 0,
        downReason: 'never-seen',
      });
    }
  }

  /** A decoded, authenticated heartbeat from `source` (the datagram's source address). */
  receive(hb: Heartbeat, source: string, now: number): Receipt {
    const peer = this.peers.get(hb.node);
    if (!peer) return { accepted: false, reason: 'unknown-node' }; // also our own name: nobody else may use it
    if (this.addresses.get(hb.node) !== source) return { accepted: false, reason: 'wrong-source' };
    if (hb.incarnation < peer.incarnation || (hb.incarnation === peer.incarnation && hb.seq <= peer.seq)) {
      return { accepted: false, reason: 'replay' };
    }
    const leaving = (hb.flags & Flag.LEAVING) !== 0;
    const changed =
      peer.up === leaving ||
      peer.flags !== hb.flags ||
      peer.claims.join() !== hb.claims.join() ||
      peer.digest !== hb.digest;
    peer.incarnation = hb.incarnation;
    peer.seq = hb.seq;
    peer.flags = hb.flags;
    peer.claims = hb.claims;
    peer.digest = hb.digest;
    peer.lastSeen = now;
    peer.up = !leaving;
    peer.downReason = leaving ? 'leaving' : undefined;
    return { accepted: true, changed, peer };
  }

  /** Marks Down every peer silent for `missed` intervals; returns the names that went Down. */
  expire(now: number): string[] {
    const gone: string[] = [];
    for (const p of this.peers.values()) {
      if (p.up && now - p.lastSeen >= this.timeoutMs) {
        p.up = false;
        p.downReason = 'timeout';
        gone.push(p.name);
      }
    }
    return gone;
  }

  /** The earliest time a peer that is Up can time out, for the daemon's timer. */
  nextExpiry(): number | undefined {
    let next: number | undefined;
    for (const p of this.peers.values())
      if (p.up && (next === undefined || p.lastSeen + this.timeoutMs < next)) next = p.lastSeen + this.timeoutMs;
    return next;
  }

  list(): readonly Peer[] {
    return [...this.peers.values()];
  }

  /** Live peers for the election: Up ones, with what their flags allow. */
  live(): LiveNode[] {
    return this.list()
      .filter((p) => p.up)
      .map((p) => liveNode(p.name, p.flags));
  }

  claims(): Claim[] {
    return this.list()
      .filter((p) => p.up)
      .flatMap((p) => p.claims.map((ip) => ({ ip, node: p.name })));
  }
}
