import type { Claim, Election } from './ownership.js';

// The handover rules (docs/design.md, "Handover rules"): what a node holds, takes,
// announces and lets go of, given the election and what its kernel holds now. Pure:
// time comes in as a number and the state it keeps comes back out, so the rules are
// tested without a kernel (test/unit/handover.test.ts, handover-sim.test.ts).

/** Why this node holds a floating IP. */
export type HoldReason =
  /** The election gives it to this node. */
  | 'elected'
  /** This node hands it over (draining or leaving) and the new owner has not claimed it yet. */
  | 'make-before-break';

/** Why this node does not hold a floating IP the election gives it, or lets go of one it held. */
export type ReleaseReason =
  /** Still listening after start or carrier return: it takes nothing it does not hold (the joining gate). */
  | 'joining'
  /** The new owner claims it (or the make-before-break bound ran out). */
  | 'handed-over'
  /** The election gives it to another node, or to nobody. */
  | 'not-elected'
  /** More configured peers fail authentication than pass: this node's key is probably wrong; it takes nothing. */
  | 'outvoted'
  /** A peer that fails authentication but is alive held it when it was last verified: nobody takes it from it. */
  | 'held-by-unverified';

export interface HandoverInput {
  readonly self: string;
  readonly election: Election;
  /** Floating IPs this node's kernel holds. */
  readonly held: ReadonlySet<string>;
  /** Has listened long enough to take part (see Membership and the daemon's start-up). */
  readonly ready: boolean;
  /** Draining or leaving: IPs this node gives up are held until their new owner claims them. */
  readonly handingOver: boolean;
  /** What the other live nodes claim to hold, from their heartbeats. */
  readonly peerClaims: readonly Claim[];
  /** What nodes that are leaving (Down for the election) still claim: they hold it until they hear the new owner. */
  readonly leavingClaims?: readonly Claim[];
  /** IP → when (ms) this node started to hand it over; the state of the previous decision. */
  readonly handoverSince: ReadonlyMap<string, number>;
  /** IPs this node already re-announced after winning a conflict; the state of the previous decision. */
  readonly contested: ReadonlySet<string>;
  readonly now: number;
  /** The longest a make-before-break hold lasts: one Down interval (missed × interval). */
  readonly holdLimitMs: number;
  /** Peers alive but failing authentication (membership's `failing`); absent: none. */
  readonly unverified?: {
    /** More of them than verified peers: this node takes nothing it does not hold. */
    readonly outvoted: boolean;
    /** IP → the failing peer that held it when it was last verified. */
    readonly held: ReadonlyMap<string, string>;
  };
}

export interface Handover {
  /** Owner of each floating IP as this node's data plane must reflect it (the election, gated). */
  readonly owners: ReadonlyMap<string, string>;
  /** IPs this node must hold, with why. */
  readonly hold: ReadonlyMap<string, HoldReason>;
  /** Held IPs not in `hold`, and elected IPs not taken, with why. */
  readonly release: ReadonlyMap<string, ReleaseReason>;
  /** IPs to hold that the kernel does not hold yet. */
  readonly take: ReadonlySet<string>;
  /** IPs to announce by gratuitous ARP: newly taken, and conflicts won (once per conflict). */
  readonly announce: ReadonlySet<string>;
  /** IPs among `announce` that are re-announced because this node won a conflict. */
  readonly reannounce: ReadonlySet<string>;
  readonly handoverSince: ReadonlyMap<string, number>;
  readonly contested: ReadonlySet<string>;
  /**
   * IPs to hold that another node still claims: one handing them over to this node
   * (make-before-break: draining, or leaving and not let go yet), or the loser of a conflict. Until it lets go, replies to the
   * connections it translated may still reach it and come on to this host (docs/datapath.md,
   * "The leak guard").
   */
  readonly claimedElsewhere: ReadonlySet<string>;
  /** When to decide again without any other trigger (a make-before-break hold runs out). */
  readonly wakeAt?: number;
}

export function handover(input: HandoverInput): Handover {
  const { self, election, held, now } = input;
  const owners = new Map(election.owners);
  const hold = new Map<string, HoldReason>();
  const release = new Map<string, ReleaseReason>();
  const unverifiedHolder = (ip: string): string | undefined => {
    const holder = input.unverified?.held.get(ip);
    const to = election.owners.get(ip);
    // Unless the election's owner (a verified node) says it holds it: then it is no longer the failing peer's.
    return holder !== undefined && !input.peerClaims.some((c) => c.ip === ip && c.node === to) ? holder : undefined;
  };
  for (const [ip, owner] of election.owners) {
    if (held.has(ip) && owner === self) {
      hold.set(ip, 'elected');
      continue;
    }
    // A peer that fails authentication is alive (docs/design.md, "Handover rules"): what
    // it held when last verified stays its own, for this node's data plane too.
    const holder = unverifiedHolder(ip);
    if (holder !== undefined) owners.set(ip, holder);
    if (owner !== self) continue;
    // The joining gate: the election may give IPs to a joining node (so they wait for
    // it), but it takes them only once ready; what it holds already, it keeps. The
    // same for a node outvoted by peers that fail authentication.
    const gate: ReleaseReason | undefined = !input.ready
      ? 'joining'
      : input.unverified?.outvoted
        ? 'outvoted'
        : holder !== undefined
          ? 'held-by-unverified'
          : undefined;
    if (gate) {
      if (holder === undefined) owners.delete(ip);
      release.set(ip, gate);
    } else hold.set(ip, 'elected');
  }

  const handoverSince = new Map<string, number>();
  let wakeAt: number | undefined;
  for (const ip of held) {
    if (hold.has(ip)) continue;
    const to = election.owners.get(ip);
    const claimed = to !== undefined && input.peerClaims.some((c) => c.ip === ip && c.node === to);
    // Make-before-break: a node that gives an IP up on purpose keeps it until the new
    // owner says it holds it, bounded by one Down interval in case it never does.
    if (input.handingOver && to !== undefined && !claimed) {
      const since = input.handoverSince.get(ip) ?? now;
      const until = since + input.holdLimitMs;
      if (now < until) {
        handoverSince.set(ip, since);
        owners.set(ip, self);
        hold.set(ip, 'make-before-break');
        wakeAt = Math.min(wakeAt ?? until, until);
        continue;
      }
    }
    release.set(ip, input.handingOver && to !== undefined ? 'handed-over' : 'not-elected');
  }

  // After a partition heals, the switch may have learned the IP's MAC on the loser's
  // port: the winner of a conflict announces again (like a VRRP master hearing another).
  const contested = new Set(
    [...election.reasons]
      .filter(([ip, reason]) => reason === 'conflict' && election.owners.get(ip) === self && held.has(ip))
      .map(([ip]) => ip),
  );
  const reannounce = new Set([...contested].filter((ip) => !input.contested.has(ip)));
  const take = new Set([...hold.keys()].filter((ip) => !held.has(ip)));
  const elsewhere = [...input.peerClaims, ...(input.leavingClaims ?? [])];
  const claimedElsewhere = new Set(
    [...hold.keys()].filter((ip) => elsewhere.some((c) => c.ip === ip && c.node !== self)),
  );
  return {
    owners,
    hold,
    release,
    take,
    announce: new Set([...take, ...reannounce]),
    reannounce,
    handoverSince,
    contested,
    claimedElsewhere,
    ...(wakeAt !== undefined ? { wakeAt } : {}),
  };
}
