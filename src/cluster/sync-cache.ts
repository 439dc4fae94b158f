import { entryKey, type SyncedEntry } from '../dataplane/conntrack-entry.js';
import type { SyncRecord } from './sync-protocol.js';

// What a candidate of a floating IP keeps of its owner's connections, and what an owner
// has still to send. Pure: time is passed in (monotonic ms).

interface Cached {
  readonly entry: SyncedEntry;
  /** When the kernel would forget it unless traffic refreshed it (the owner's next sweep says so). */
  readonly expiresAt: number;
  readonly updatedAt: number;
}

interface SweepState {
  readonly id: number;
  readonly startedAt: number;
  received: number;
}

/**
 * How long past its conntrack timeout an entry is kept: an owner's sweep refreshes
 * timeouts that traffic renewed, and with many connections sweeps come less often.
 */
export const EXPIRY_GRACE_MS = 120_000;

const toEntry = (ip: string, r: SyncRecord): SyncedEntry => ({
  proto: r.proto,
  src: r.src,
  dst: r.dst,
  sport: r.sport,
  dport: r.dport,
  natIp: ip,
  natPort: r.natPort,
  status: r.status,
  timeout: r.timeout,
  tcpState: r.tcpState,
});

export class SyncCache {
  private readonly byIp = new Map<string, Map<string, Cached>>();
  private readonly sweeps = new Map<string, SweepState>();

  private table(ip: string): Map<string, Cached> {
    let t = this.byIp.get(ip);
    if (!t) this.byIp.set(ip, (t = new Map<string, Cached>()));
    return t;
  }

  /** Applies records from the owner of `ip`; `sweep` (non-zero) names the full sweep they belong to. */
  apply(ip: string, records: readonly SyncRecord[], sweep: number, now: number): void {
    const t = this.table(ip);
    if (sweep) {
      const s = this.sweeps.get(ip);
      if (!s || s.id !== sweep) this.sweeps.set(ip, { id: sweep, startedAt: now, received: 0 });
      this.sweeps.get(ip)!.received += records.length;
    }
    for (const r of records) {
      const key = entryKey(r);
      if (r.op === 'delete') t.delete(key);
      else t.set(key, { entry: toEntry(ip, r), expiresAt: now + r.timeout * 1000 + EXPIRY_GRACE_MS, updatedAt: now });
    }
  }

  /**
   * The owner finished sweep `sweep` of `ip` with `total` records. If every one arrived,
   * what the sweep did not mention (and no change since it began) is gone on the owner.
   * Returns whether the cache is now known complete.
   */
  endSweep(ip: string, sweep: number, total: number): boolean {
    const s = this.sweeps.get(ip);
    this.sweeps.delete(ip);
    if (!s || s.id !== sweep || s.received !== total) return false;
    const t = this.table(ip);
    for (const [k, c] of t) if (c.updatedAt < s.startedAt) t.delete(k);
    return true;
  }

  /** Forgets entries past their timeout (and grace). */
  expire(now: number): number {
    let n = 0;
    for (const t of this.byIp.values())
      for (const [k, c] of t)
        if (c.expiresAt <= now) {
          t.delete(k);
          n++;
        }
    return n;
  }

  /** The entries of `ip` to install, with the timeout they have left, and forgets them. */
  take(ip: string, now: number): SyncedEntry[] {
    const t = this.byIp.get(ip);
    this.byIp.delete(ip);
    this.sweeps.delete(ip);
    if (!t) return [];
    return [...t.values()].map((c) => ({
      ...c.entry,
      timeout: Math.max(1, Math.ceil((c.expiresAt - EXPIRY_GRACE_MS - now) / 1000)),
    }));
  }

  /** Forgets `ip` (this node is no longer its candidate, or owns it and its kernel has the entries). */
  drop(ip: string): void {
    this.byIp.delete(ip);
    this.sweeps.delete(ip);
  }

  /** Entries cached per floating IP. */
  sizes(): Record<string, number> {
    return Object.fromEntries([...this.byIp].map(([ip, t]) => [ip, t.size]));
  }
}

/** An owner's changes not sent yet, per floating IP: the newest state of each connection wins. */
export class SyncOutbox {
  private readonly pending = new Map<string, Map<string, SyncRecord>>();
  /** When the oldest unsent change arrived (for the lag metric). */
  oldest: number | undefined;

  add(ip: string, record: SyncRecord, now: number): void {
    let p = this.pending.get(ip);
    if (!p) this.pending.set(ip, (p = new Map<string, SyncRecord>()));
    p.set(entryKey(record), record);
    this.oldest ??= now;
  }

  /** Every pending change, by floating IP, and empties the outbox. */
  take(): Map<string, SyncRecord[]> {
    const out = new Map([...this.pending].map(([ip, p]) => [ip, [...p.values()]]));
    this.pending.clear();
    this.oldest = undefined;
    return out;
  }

  get size(): number {
    let n = 0;
    for (const p of this.pending.values()) n += p.size;
    return n;
  }
}

/** A record for `entry` (an upsert), or its deletion. */
export const toRecord = (e: SyncedEntry, op: SyncRecord['op'] = 'upsert'): SyncRecord => ({
  op,
  proto: e.proto,
  src: e.src,
  dst: e.dst,
  sport: e.sport,
  dport: e.dport,
  natPort: e.natPort,
  status: e.status,
  tcpState: e.tcpState,
  timeout: e.timeout,
});
