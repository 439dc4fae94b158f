import { nodeNamed, type Config, type NodeSpec } from '../config/model.js';
import { handover, type Handover } from './handover.js';
import { isEligible, liveNode, Membership, outvoted, type Receipt } from './membership.js';
import { elect, type Election, type Reason } from './ownership.js';
import { decode, encode, Flag, withSeq } from './protocol.js';

// One member of the cluster, without I/O: heartbeats in and out as bytes, time passed
// in, and decisions out. The daemon drives it from sockets, timers and the kernel; the
// handover simulation (test/unit/handover-sim.test.ts) drives several on a fake clock.

/** This node's own condition, which its heartbeat flags carry. */
export interface SelfCondition {
  /** Has listened for a full Down interval since start or since carrier returned. */
  readonly listened: boolean;
  readonly draining: boolean;
  readonly carrier: boolean;
  readonly leaving: boolean;
}

/**
 * Why a floating IP left its owner, from what this node knew of that owner when it
 * decided: the operator's "why did it move" (the election's reason says why the new
 * owner got it).
 */
export type OwnerCause =
  /** Nobody owned it before (start, a new IP). */
  | 'unowned'
  /** No heartbeat from the owner for a Down interval. */
  | 'owner-down'
  /** The owner said it was stopping. */
  | 'owner-left'
  | 'owner-draining'
  | 'owner-no-carrier'
  /** The owner listens again (restarted, or its carrier came back) and may not own yet. */
  | 'owner-not-ready'
  /** The owner is no node of the config any more (a reload). */
  | 'owner-removed'
  /** The owner is live and eligible: the election moved it (a conflict resolved, a new config). */
  | 'election';

export interface OwnerChange {
  readonly ip: string;
  readonly from?: string;
  readonly to?: string;
  readonly reason: Reason;
  readonly cause: OwnerCause;
  /** ms (monotonic) when this node saw the old owner go Down (owner-down, owner-left): where an outage starts. */
  readonly downAt?: number;
}

/** What an owner's heartbeat flags say about why it gives an IP up (the first that applies). */
function causeOfFlags(flags: number): OwnerCause {
  if (flags & Flag.LEAVING) return 'owner-left';
  if (flags & Flag.NO_CARRIER) return 'owner-no-carrier';
  if (flags & Flag.DRAINING) return 'owner-draining';
  if (!(flags & Flag.READY)) return 'owner-not-ready';
  return 'election';
}

export interface Decision extends Handover {
  readonly election: Election;
  /** Owners that differ from the previous decision's, for the log and the failover counter. */
  readonly ownerChanges: readonly OwnerChange[];
}

/** A node as `status` and the metrics see it. */
export interface NodeView {
  readonly name: string;
  readonly up: boolean;
  readonly eligible: boolean;
  readonly draining: boolean;
  readonly carrier: boolean;
  readonly digest?: string;
  readonly holds: readonly string[];
  /** Alive but its heartbeats fail authentication (another cluster key?). */
  readonly authFailing: boolean;
}

/** Peers that fail authentication, as the shell reports them. */
export interface AuthState {
  /** Configured peers alive but unverified, sorted. */
  readonly failing: readonly string[];
  /** Peers Up (verified). */
  readonly verified: number;
  /** More failing than verified: this node takes nothing it does not hold. */
  readonly outvoted: boolean;
}

export class ClusterNode {
  private configValue: Config;
  private selfSpec: NodeSpec;
  private hmacKeyValue: readonly Buffer[];
  private readonly membership: Membership;
  private seq = 0n;
  private cond: SelfCondition = { listened: false, draining: false, carrier: true, leaving: false };
  /** Floating IPs the kernel holds, as of the last reconcile: what heartbeats claim. */
  private heldIPs = new Set<string>();
  /** The election of the last decision whose data plane was applied. */
  private appliedElection: Election = { owners: new Map(), reasons: new Map() };
  private last?: Decision;
  /** The last heartbeat sent, and its flags and claims: the next one is the same but for its sequence number. */
  private lastSent?: { content: string; wire: Buffer };

  /**
   * @param keys the cluster keys: the first signs, every one verifies (a rotation)
   * @param incarnation larger on every start, so peers tell a restart from a replay
   * @throws when a name does not fit a heartbeat (a config problem, said at start)
   */
  constructor(
    config: Config,
    name: string,
    keys: readonly Buffer[],
    readonly incarnation: bigint,
  ) {
    this.configValue = config;
    this.selfSpec = nodeNamed(config, name);
    this.hmacKeyValue = keys;
    this.membership = new Membership(config, name);
    this.encode(0n);
  }

  get config(): Config {
    return this.configValue;
  }

  get self(): NodeSpec {
    return this.selfSpec;
  }

  /** The cluster keys: the first signs heartbeats, every one verifies them. */
  get hmacKey(): readonly Buffer[] {
    return this.hmacKeyValue;
  }

  get condition(): SelfCondition {
    return this.cond;
  }

  get held(): ReadonlySet<string> {
    return this.heldIPs;
  }

  /** A node is Down after this long without a heartbeat. */
  get downAfterMs(): number {
    return this.membership.timeoutMs;
  }

  /** Changes this node's own condition; true when its flags (what peers hear) changed. */
  setCondition(change: Partial<SelfCondition>): boolean {
    const before = this.flags();
    this.cond = { ...this.cond, ...change };
    return this.flags() !== before;
  }

  /** A new config (and keys): peers that stay keep what was heard from them. */
  reconfigure(config: Config, keys: readonly Buffer[]): void {
    const self = nodeNamed(config, this.selfSpec.name);
    this.encode(0n, config, self, keys); // names that do not fit a heartbeat throw here, before any change
    this.configValue = config;
    this.selfSpec = self;
    this.hmacKeyValue = keys;
    this.lastSent = undefined;
    this.membership.reconfigure(config);
  }

  flags(): number {
    const c = this.cond;
    return (
      (c.listened ? Flag.READY : 0) |
      (c.draining ? Flag.DRAINING : 0) |
      (c.carrier ? 0 : Flag.NO_CARRIER) |
      (c.leaving ? Flag.LEAVING : 0)
    );
  }

  /** The next heartbeat to send. */
  heartbeat(): Buffer {
    this.seq += 1n;
    // Most heartbeats differ from the last one in their sequence number only.
    const content = `${this.flags()} ${[...this.heldIPs].sort().join()}`;
    if (this.lastSent?.content === content)
      return (this.lastSent.wire = withSeq(this.lastSent.wire, this.seq, this.hmacKeyValue[0]!));
    const wire = this.encode(this.seq);
    this.lastSent = { content, wire };
    return wire;
  }

  private encode(seq: bigint, config = this.configValue, self = this.selfSpec, keys = this.hmacKeyValue): Buffer {
    const claims = [...this.heldIPs].sort();
    return encode(
      {
        cluster: config.cluster.name,
        node: self.name,
        flags: this.flags(),
        incarnation: this.incarnation,
        seq,
        digest: config.digest,
        claims,
      },
      keys[0]!,
    );
  }

  /** A datagram from `source`; never throws on what the network sends. */
  receive(datagram: Buffer, source: string, now: number): Receipt {
    const d = decode(datagram, this.hmacKeyValue, this.configValue.cluster.name);
    if (d.ok) return this.membership.receive(d.msg, source, now);
    if (d.reason !== 'bad-mac') return { accepted: false, reason: d.reason };
    const { peer, changed } = this.membership.authFailed(source, now);
    return { accepted: false, reason: d.reason, ...(peer !== undefined ? { authPeer: peer, changed } : {}) };
  }

  /**
   * Marks Down the peers silent for a Down interval (`down`), and ends the failing state
   * of peers from which no bad MAC came for as long; `changed` if either happened.
   */
  expire(now: number): { down: string[]; changed: boolean } {
    const down = this.membership.expire(now);
    const over = this.membership.expireFailing(now);
    return { down, changed: down.length + over.length > 0 };
  }

  /** Peers that fail authentication, and whether they outvote this node. */
  auth(): AuthState {
    const failing = this.membership
      .failing()
      .map((p) => p.name)
      .sort();
    const verified = this.membership.live().length;
    return { failing, verified, outvoted: outvoted(failing.length, verified) };
  }

  nextExpiry(): number | undefined {
    return this.membership.nextExpiry();
  }

  /** Whether this node may take floating IPs now: the rule peers apply to its flags. */
  eligible(): boolean {
    return isEligible(this.flags());
  }

  /** The election over the live nodes and claims heard, then the handover rules. */
  decide(now: number): Decision {
    const live = [...this.membership.live(), liveNode(this.selfSpec.name, this.flags())];
    const peerClaims = this.membership.claims();
    const claims = [...peerClaims, ...[...this.heldIPs].map((ip) => ({ ip, node: this.selfSpec.name }))];
    const election = elect(this.configValue, live, claims);
    const previous = this.last?.election.owners ?? new Map<string, string>();
    const ownerChanges: OwnerChange[] = [];
    for (const [ip, reason] of election.reasons) {
      const from = previous.get(ip);
      const to = election.owners.get(ip);
      if (from !== to)
        ownerChanges.push({ ip, ...(from ? { from } : {}), ...(to ? { to } : {}), reason, ...this.causeOf(from) });
    }
    const h = handover({
      self: this.selfSpec.name,
      election,
      held: this.heldIPs,
      ready: this.cond.listened,
      handingOver: this.cond.draining || this.cond.leaving,
      peerClaims,
      leavingClaims: this.membership.leavingClaims(now),
      handoverSince: this.last?.handoverSince ?? new Map(),
      contested: this.last?.contested ?? new Set(),
      now,
      holdLimitMs: this.membership.timeoutMs,
      unverified: { outvoted: this.auth().outvoted, held: this.membership.heldByFailing() },
    });
    this.last = { ...h, election, ownerChanges };
    return this.last;
  }

  /** Why `from` (the previous owner) gave an IP up, and since when it is Down if it is. */
  private causeOf(from: string | undefined): { cause: OwnerCause; downAt?: number } {
    if (from === undefined) return { cause: 'unowned' };
    if (from === this.selfSpec.name) return { cause: causeOfFlags(this.flags()) };
    const peer = this.membership.list().find((p) => p.name === from);
    if (!peer) return { cause: 'owner-removed' };
    if (peer.up) return { cause: causeOfFlags(peer.flags) };
    const downAt = peer.downAt !== undefined ? { downAt: peer.downAt } : {};
    return { cause: peer.downReason === 'leaving' ? 'owner-left' : 'owner-down', ...downAt };
  }

  /**
   * The kernel now holds `held`, after applying `decision` (or failing to: then pass no
   * decision). True when the claims changed, so peers must hear at once.
   */
  applied(held: ReadonlySet<string>, decision?: Decision): boolean {
    if (decision) this.appliedElection = decision.election;
    const same = held.size === this.heldIPs.size && [...held].every((ip) => this.heldIPs.has(ip));
    this.heldIPs = new Set(held);
    return !same;
  }

  /** Owners as last applied to this host's data plane (not recomputed). */
  get owners(): ReadonlyMap<string, string> {
    return this.appliedElection.owners;
  }

  /** Every node of the config that was ever heard, and this one. */
  nodes(): NodeView[] {
    const views: NodeView[] = [];
    for (const p of this.membership.list()) {
      if (p.downReason === 'never-seen' && !p.failing) continue;
      views.push({
        name: p.name,
        up: p.up,
        eligible: p.up && isEligible(p.flags),
        draining: (p.flags & Flag.DRAINING) !== 0,
        carrier: (p.flags & Flag.NO_CARRIER) === 0,
        ...(p.downReason !== 'never-seen' ? { digest: p.digest } : {}),
        holds: p.up ? p.claims : [],
        authFailing: p.failing,
      });
    }
    const c = this.cond;
    views.push({
      name: this.selfSpec.name,
      up: true,
      eligible: this.eligible(),
      draining: c.draining,
      carrier: c.carrier,
      digest: this.configValue.digest,
      holds: [...this.heldIPs].sort(),
      authFailing: false,
    });
    return views;
  }
}
