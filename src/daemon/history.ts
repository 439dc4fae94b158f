import type { OwnerCause, OwnerChange } from '../cluster/node.js';
import type { Reason } from '../cluster/ownership.js';

// The failover history: `status` shows who owns each floating IP now; this keeps how
// they got there. Every node records the ownership changes it decides (the same on
// every node that sees the same cluster); the node that takes an IP over also records
// the outage it measured: from the moment it saw the old owner go Down to the moment
// its gratuitous ARP left. Plain data and times passed in, so it is unit-tested.

/** How many ownership changes `status` keeps: enough for a bad hour, small enough to read. */
export const HISTORY_LIMIT = 32;

export interface FailoverRecord {
  /** Wall-clock time of the decision (ISO 8601, UTC). */
  readonly at: string;
  readonly ip: string;
  /** The previous owner; null when nobody owned it. */
  readonly from: string | null;
  /** The new owner; null when nobody may own it now. */
  readonly to: string | null;
  /** Why the new owner got it (the election's reason). */
  readonly reason: Reason;
  /** Why the old owner gave it up, as this node knew it. */
  readonly cause: OwnerCause;
  /**
   * On the node that took the IP over after its owner went Down: ms from seeing the owner
   * Down to the gratuitous ARP (the takeover's share of the outage; the Down interval
   * before it is the rest). null elsewhere, for planned moves, and until the ARP left.
   */
  readonly outageMs: number | null;
}

interface Pending {
  readonly record: { -readonly [K in keyof FailoverRecord]: FailoverRecord[K] };
  readonly downAt: number;
}

export class FailoverHistory {
  private readonly records: Pending['record'][] = [];
  /** IP → its latest change that gives it to this node after its owner went Down, until this node announced it. */
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly self: () => string,
    private readonly limit = HISTORY_LIMIT,
  ) {}

  /** The changes of one decision, made at `wallMs` (Date.now()). */
  record(changes: readonly OwnerChange[], wallMs: number): void {
    const at = new Date(wallMs).toISOString();
    for (const c of changes) {
      const record = {
        at,
        ip: c.ip,
        from: c.from ?? null,
        to: c.to ?? null,
        reason: c.reason,
        cause: c.cause,
        outageMs: null,
      };
      this.records.push(record);
      // A newer change of the IP supersedes what was pending for it.
      this.pending.delete(c.ip);
      if (c.to === this.self() && c.downAt !== undefined) this.pending.set(c.ip, { record, downAt: c.downAt });
    }
    this.records.splice(0, Math.max(0, this.records.length - this.limit));
  }

  /**
   * This node announced `ip` (gratuitous ARP) at `monotonicMs`: completes the change that
   * gave it the IP after its owner went Down, and returns the outage in ms (undefined if
   * this announcement ends no such outage: a planned move, a repeat).
   */
  announced(ip: string, monotonicMs: number): number | undefined {
    const p = this.pending.get(ip);
    if (!p) return undefined;
    this.pending.delete(ip);
    const ms = Math.max(0, Math.round(monotonicMs - p.downAt));
    p.record.outageMs = ms;
    return ms;
  }

  /** Oldest first. */
  list(): readonly FailoverRecord[] {
    return this.records.map((r) => ({ ...r }));
  }
}
