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
  /** ms (monotonic) when it went from Up to Down here (timed out, or said it was leaving); undefined while Up. */
  downAt: number | undefined;
  /** ms (monotonic) of the last datagram from its address whose MAC failed; undefined if none. */
  badMacAt: number | undefined;
  /**
   * Alive but unverified: not Up, and datagrams from its address failed authentication
   * within the last Down interval (it runs with another cluster key, most likely).
   */
  failing: boolean;
  /** What it held when it went from Up to failing: nobody takes these from it while it fails. */
  heldWhenFailing: readonly string[];
}

export type Receipt =
  | { readonly accepted: true; readonly changed: boolean; readonly peer: Peer }
  | {
      readonly accepted: false;
      readonly reason: DropReason;
      /** A bad MAC from a configured node's address: that node. */
      readonly authPeer?: string;
      /** That node started failing authentication with this datagram. */
      readonly changed?: boolean;
    };

/**
 * A node that hears more configured peers failing authentication than passing it is
 * probably the one with the wrong key: it takes nothing it does not hold (docs/design.md,
 * "Handover rules", unverified peers). A tie counts as outvoted: in a two-node cluster
 * neither side can tell whose key is wrong, and neither may take the other's IPs.
 */
export const outvoted = (failing: number, verified: number): boolean => failing > verified;

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
        downAt: undefined,
        badMacAt: undefined,
        failing: false,
        heldWhenFailing: [],
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
    if (peer.up && leaving) peer.downAt = now;
    else if (!leaving) peer.downAt = undefined;
    peer.up = !leaving;
    peer.downReason = leaving ? 'leaving' : undefined;
    const wasFailing = peer.failing;
    peer.failing = false;
    peer.heldWhenFailing = [];
    return { accepted: true, changed: changed || wasFailing, peer };
  }

  /**
   * A datagram from `source` with our magic and version whose MAC failed. From a configured
   * node's address, that node is alive but unverified (unless it is Up: then the datagram is
   * someone else's forgery, and the node is fine). Returns that node, and whether it started
   * to fail just now.
   */
  authFailed(source: string, now: number): { peer?: string; changed: boolean } {
    const peer = [...this.peers.values()].find((p) => this.addresses.get(p.name) === source);
    if (!peer) return { changed: false };
    peer.badMacAt = now;
    const changed = !peer.up && !peer.failing;
    if (changed) peer.failing = true; // what it held when it was last heard, if anything, was taken over already
    return { peer: peer.name, changed };
  }

  private recentlyFailed(p: Peer, now: number): boolean {
    return p.badMacAt !== undefined && now - p.badMacAt < this.timeoutMs;
  }

  /** Marks Down every peer silent for `missed` intervals; returns the names that went Down. */
  expire(now: number): string[] {
    const gone: string[] = [];
    for (const p of this.peers.values()) {
      if (p.up && now - p.lastSeen >= this.timeoutMs) {
        p.up = false;
        p.downReason = 'timeout';
        p.downAt = now;
        // Its heartbeats stopped passing while datagrams from it keep failing: it is
        // alive with another key, and still holds what it held.
        p.failing = this.recentlyFailed(p, now);
        p.heldWhenFailing = p.failing ? p.claims : [];
        gone.push(p.name);
      }
    }
    return gone;
  }

  /** Ends the failing state of peers from which no bad MAC came for a Down interval; returns their names. */
  expireFailing(now: number): string[] {
    const over: string[] = [];
    for (const p of this.peers.values()) {
      if (p.failing && !this.recentlyFailed(p, now)) {
        p.failing = false;
        p.heldWhenFailing = [];
        over.push(p.name);
      }
    }
    return over;
  }

  /** The earliest time a peer that is Up can time out, for the daemon's timer. */
  nextExpiry(): number | undefined {
    let next: number | undefined;
    const earliest = (at: number) => (next = next === undefined ? at : Math.min(next, at));
    for (const p of this.peers.values()) {
      if (p.up) earliest(p.lastSeen + this.timeoutMs);
      if (p.failing && p.badMacAt !== undefined) earliest(p.badMacAt + this.timeoutMs);
    }
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

  /** Peers alive but unverified (see Peer.failing). */
  failing(): readonly Peer[] {
    return this.list().filter((p) => p.failing);
  }

  /** What failing peers held when they started to fail: IP → that peer. */
  heldByFailing(): Map<string, string> {
    return new Map(this.failing().flatMap((p) => p.heldWhenFailing.map((ip) => [ip, p.name] as const)));
  }

  claims(): Claim[] {
    return this.list()
      .filter((p) => p.up)
      .flatMap((p) => p.claims.map((ip) => ({ ip, node: p.name })));
  }

  /**
   * What peers that said they are leaving still claim, heard within a Down interval: Down
   * for the election, they hold those IPs until they hear the new owner (make-before-break).
   */
  leavingClaims(now: number): Claim[] {
    return this.list()
      .filter((p) => p.downReason === 'leaving' && now - p.lastSeen <= this.timeoutMs)
      .flatMap((p) => p.claims.map((ip) => ({ ip, node: p.name })));
  }
}
