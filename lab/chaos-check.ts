// The soak's judge (lab/chaos.ts): pure. It is fed, in time order, what the harness did
// and what the daemons logged (events), and what the kernels held (samples), and says when
// an invariant broke. Times are wall-clock milliseconds (Date.now(), pino's `time`, bash's
// EPOCHREALTIME), the one clock every process of the machine shares.
//
// Every duration it judges is a lower bound: a sample reads the hosts one after another in
// [t0, t1], so a state seen from sample i to sample j lasted at least t0(j) − t1(i).
// Sampling can hide up to one sample period of a violation; it never invents one.

export type HostEventKind =
  | 'started' // the harness spawned the daemon
  | 'listening' // log: started, listening before taking part (joining)
  | 'ready' // log: ready, taking part in the election
  | 'noCarrier' // log: gave up its IPs
  | 'carrierBack' // log: listening again (joining)
  | 'leaving' // the harness sent SIGTERM
  | 'stopped' // the daemon is gone (killed, or exited)
  | 'released' // the host holds no floating IP any more (ExecStopPost parked it, or the daemon said it stopped)
  | 'portDown'
  | 'portUp'
  | 'drain'
  | 'undrain'
  | 'stepBack' // log: reconciles keep failing, it hands its IPs over (not eligible)
  | 'stepIn'; // log: reconcile works again

export type ChaosEvent =
  | { readonly t: number; readonly kind: HostEventKind; readonly host: string }
  /** Frames from `pairs[i][0]` to `pairs[i][1]` are dropped; `groups` when it is a partition (symmetric). */
  | {
      readonly t: number;
      readonly kind: 'block';
      readonly id: string;
      readonly pairs: readonly (readonly [string, string])[];
      readonly groups?: readonly (readonly string[])[];
    }
  | { readonly t: number; readonly kind: 'unblock'; readonly id: string };

export interface Sample {
  readonly t0: number;
  readonly t1: number;
  /** Floating IP → the hosts whose kernel holds it. */
  readonly holders: Readonly<Record<string, readonly string[]>>;
}

export interface Violation {
  readonly kind: string;
  readonly t: number;
  readonly what: string;
}

export interface CheckerOptions {
  readonly hosts: readonly string[];
  /** Floating IP → the nodes that may own it (the election's rule 1). */
  readonly candidates: Readonly<Record<string, readonly string[]>>;
  /** Two connected hosts may both hold an IP at most this long (ms). */
  readonly doubleBoundMs: number;
  /** An IP with an eligible candidate has a holder within this (ms). */
  readonly ownerBoundMs: number;
  /** The candidates of role worker (rule 3: workers first). */
  readonly workers: readonly string[];
  /** A joining node that has not said READY this long after it began listening no longer excuses an ownerless IP. */
  readonly joinMaxMs: number;
}

interface HostState {
  alive: boolean;
  aliveSince: number;
  portUp: boolean;
  portSince: number;
  listeningAt: number | undefined;
  ready: boolean;
  draining: boolean;
  steppedBack: boolean;
  leaving: boolean;
  releasedAt: number | undefined;
  /** Last change of anything that makes it eligible or joining. */
  eligChangedAt: number;
}

const NEVER = -Infinity;

export class Checker {
  private readonly host = new Map<string, HostState>();
  private readonly blocks = new Map<string, Extract<ChaosEvent, { kind: 'block' }>>();
  /** "a|b" (sorted) → when a block between them last ended. */
  private readonly healedAt = new Map<string, number>();
  private asymHealedAt = NEVER;
  private topologyAt = NEVER;
  /** Open streaks: key → start (t1 of the first sample that showed it); reported keys. */
  private readonly streaks = new Map<string, number>();
  private readonly reported = new Set<string>();
  private readonly required = new Map<string, number>();
  readonly violations: Violation[] = [];

  constructor(private readonly o: CheckerOptions) {
    for (const h of o.hosts)
      this.host.set(h, {
        alive: false,
        aliveSince: NEVER,
        portUp: true,
        portSince: NEVER,
        listeningAt: undefined,
        ready: false,
        draining: false,
        steppedBack: false,
        leaving: false,
        releasedAt: undefined,
        eligChangedAt: NEVER,
      });
  }

  event(e: ChaosEvent): void {
    if (e.kind === 'block') {
      this.blocks.set(e.id, e);
      this.topologyAt = e.t;
      return;
    }
    if (e.kind === 'unblock') {
      const b = this.blocks.get(e.id);
      this.blocks.delete(e.id);
      if (!b) return;
      for (const [a, c] of b.pairs) this.healedAt.set(pairKey(a, c), e.t);
      if (!b.groups) this.asymHealedAt = e.t;
      this.topologyAt = e.t;
      return;
    }
    const h = this.host.get(e.host);
    if (!h) return;
    h.eligChangedAt = e.t;
    switch (e.kind) {
      case 'started':
        Object.assign(h, { alive: true, aliveSince: e.t, ready: false, listeningAt: undefined, leaving: false });
        Object.assign(h, { draining: false, steppedBack: false, releasedAt: undefined });
        this.topologyAt = e.t;
        break;
      case 'listening':
      case 'carrierBack':
        Object.assign(h, { listeningAt: e.t, ready: false });
        break;
      case 'ready':
        Object.assign(h, { ready: true, listeningAt: undefined });
        break;
      case 'noCarrier':
        Object.assign(h, { ready: false, listeningAt: undefined });
        break;
      case 'leaving':
        h.leaving = true;
        break;
      case 'stopped':
        Object.assign(h, { alive: false, ready: false, listeningAt: undefined });
        this.topologyAt = e.t;
        break;
      case 'released':
        h.releasedAt = e.t;
        break;
      case 'portDown':
        Object.assign(h, { portUp: false, portSince: e.t, ready: false, listeningAt: undefined });
        this.topologyAt = e.t;
        break;
      case 'portUp':
        Object.assign(h, { portUp: true, portSince: e.t });
        this.topologyAt = e.t;
        break;
      case 'drain':
        h.draining = true;
        break;
      case 'undrain':
        h.draining = false;
        break;
      case 'stepBack':
      case 'stepIn':
        h.steppedBack = e.kind === 'stepBack';
        break;
    }
  }

  sample(s: Sample): void {
    for (const [ip, holders] of Object.entries(s.holders)) {
      this.checkDouble(s, ip, holders);
      this.checkOwned(s, ip, holders);
      for (const name of holders) {
        const h = this.host.get(name)!;
        const key = `orphan ${ip} ${name}`;
        if (!h.alive && h.releasedAt !== undefined && h.releasedAt < s.t0)
          this.flag('held-without-daemon', key, s.t0, `${name} holds ${ip} with no daemon, after release`);
      }
    }
  }

  private connected(a: string, b: string): boolean {
    const x = this.host.get(a)!;
    const y = this.host.get(b)!;
    if (!x.alive || !y.alive || !x.portUp || !y.portUp) return false;
    for (const bl of this.blocks.values())
      if (bl.pairs.some(([p, q]) => (p === a && q === b) || (p === b && q === a))) return false;
    return true;
  }

  private connectedSince(a: string, b: string): number {
    const x = this.host.get(a)!;
    const y = this.host.get(b)!;
    return Math.max(x.aliveSince, y.aliveSince, x.portSince, y.portSince, this.healedAt.get(pairKey(a, b)) ?? NEVER);
  }

  /** Invariant 3: two hosts that hear each other do not both hold an IP for longer than doubleBoundMs. */
  private checkDouble(s: Sample, ip: string, holders: readonly string[]): void {
    const seen = new Set<string>();
    for (let i = 0; i < holders.length; i++)
      for (let j = i + 1; j < holders.length; j++) {
        const [a, b] = [holders[i]!, holders[j]!].sort() as [string, string];
        if (!this.connected(a, b)) continue;
        const key = `double ${ip} ${a} ${b}`;
        seen.add(key);
        const ms = this.lasting(key, s, this.connectedSince(a, b));
        if (ms > this.o.doubleBoundMs)
          this.flag(
            'two-holders',
            key,
            s.t0,
            `${ip} held by ${a} and ${b} for over ${Math.round(ms)} ms while connected`,
          );
      }
    this.endStreaks(`double ${ip} `, seen);
  }

  /**
   * Invariant 4: in every group of hosts that hear each other, an IP with an eligible candidate
   * and no joining one (the election may make an IP wait for a joining node) has a holder
   * within ownerBoundMs. Under a one-way loss the groups are not defined: not judged then.
   */
  private checkOwned(s: Sample, ip: string, holders: readonly string[]): void {
    const groups = this.components();
    const seen = new Set<string>();
    for (const group of groups ?? []) {
      const cands = (this.o.candidates[ip] ?? []).filter((c) => group.includes(c));
      const eligible = cands.filter((c) => this.eligible(c));
      // Rule 3: a joining worker may be given the IP (it waits for it); a joining control-plane
      // node only while no eligible worker exists.
      const workers = new Set(this.o.workers);
      const eligibleWorker = eligible.some((c) => workers.has(c));
      const joining = cands.some((c) => this.joining(c, s.t0) && (workers.has(c) || !eligibleWorker));
      const key = `owner ${ip} ${group.join(',')}`;
      if (!eligible.length || joining) continue;
      seen.add(key);
      if (!this.required.has(key))
        this.required.set(key, Math.max(...group.map((g) => this.host.get(g)!.eligChangedAt), this.topologyAt));
      if (holders.some((h) => group.includes(h))) {
        this.streaks.delete(key);
        this.reported.delete(key);
        continue;
      }
      const ms = this.lasting(key, s, this.required.get(key)!, this.asymHealedAt);
      if (ms > this.o.ownerBoundMs)
        this.flag(
          'no-owner',
          key,
          s.t0,
          `${ip} held by nobody in {${group.join(',')}} for over ${Math.round(ms)} ms; eligible: ${eligible.join(',')}`,
        );
    }
    for (const k of [...this.required.keys()])
      if (k.startsWith(`owner ${ip} `) && !seen.has(k)) this.required.delete(k);
    this.endStreaks(`owner ${ip} `, seen);
  }

  /** Hosts that hear each other, grouped; undefined while a one-way loss makes hearing asymmetric. */
  private components(): string[][] | undefined {
    const blocks = [...this.blocks.values()];
    if (blocks.some((b) => !b.groups)) return undefined;
    const live = [...this.host].filter(([, h]) => h.alive && h.portUp).map(([n]) => n);
    const side = (n: string) => blocks.map((b) => b.groups!.findIndex((g) => g.includes(n))).join(',');
    const by = new Map<string, string[]>();
    for (const n of live) by.set(side(n), [...(by.get(side(n)) ?? []), n]);
    return [...by.values()];
  }

  private eligible(name: string): boolean {
    const h = this.host.get(name)!;
    return h.alive && h.portUp && h.ready && !h.draining && !h.steppedBack && !h.leaving;
  }

  private joining(name: string, t: number): boolean {
    const h = this.host.get(name)!;
    return h.alive && h.portUp && !h.leaving && h.listeningAt !== undefined && t - h.listeningAt < this.o.joinMaxMs;
  }

  /** How long (a lower bound) the state `key` has lasted at sample `s`: since its streak began, or since the latest of `since`. */
  private lasting(key: string, s: Sample, ...since: number[]): number {
    if (!this.streaks.has(key)) this.streaks.set(key, s.t1);
    return s.t0 - Math.max(this.streaks.get(key)!, ...since);
  }

  private endStreaks(prefix: string, seen: Set<string>): void {
    for (const k of [...this.streaks.keys()])
      if (k.startsWith(prefix) && !seen.has(k)) {
        this.streaks.delete(k);
        this.reported.delete(k);
      }
  }

  /** One violation per streak: a state that lasts is one finding, not one per sample. */
  private flag(kind: string, key: string, t: number, what: string): void {
    if (this.reported.has(key)) return;
    this.reported.add(key);
    this.violations.push({ kind, t, what });
  }
}

const pairKey = (a: string, b: string): string => [a, b].sort().join('|');
