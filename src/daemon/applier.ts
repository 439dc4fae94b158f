import type { Logger } from 'pino';
import type { ClusterNode, Decision } from '../cluster/node.js';
import { flushTrackedElsewhere, heldAddresses, reconcile, type TrackedElsewhere } from '../dataplane/reconcile.js';
import type { StateStore } from '../dataplane/state.js';
import { monotonicMs } from '../util/time.js';
import type { ConnectionSync } from './connection-sync.js';
import type { Planner } from './planner.js';
import type { Notifier } from './sdnotify.js';
import type { Telemetry } from './telemetry.js';

// One decision made real: planned, reconciled into the kernel, and its outcome told to
// the node (what it now holds), the peers, systemd and the counters. A failure is
// retried; failures in a row make the node step back.

const RETRY_MS = 1_000;
/**
 * A node whose reconciles fail this many times in a row steps back: it drains (hands its
 * IPs over, takes none) rather than attract every failover to a data plane it cannot
 * change. It takes part again after a reconcile succeeds.
 */
export const STEP_BACK_AFTER_FAILURES = 3;

export interface ApplierDeps {
  readonly node: ClusterNode;
  readonly planner: Planner;
  readonly state: StateStore;
  readonly log: Logger;
  readonly telemetry: Telemetry;
  readonly notifier: Notifier;
  /** Tells the peers now (claims changed). */
  sendHeartbeat(): void;
  /** Asks the loop to decide again (force: reconcile even if the plan is unchanged). */
  schedule(force: boolean): void;
  /** Stepping back started or ended. */
  steppingBackChanged(): void;
  /** Connection sync, when it runs. */
  sync?(): ConnectionSync | undefined;
}

export class Applier {
  /** The fingerprint of the plan the kernel was last converged to ('' after a failure: reconcile again). */
  private appliedPlan = '';
  private failures = 0;
  /** READY=1 was sent (after the first successful reconcile). */
  private notifiedReady = false;
  /** Monotonic ms when the running reconcile started: the watchdog stops pinging if it hangs. */
  private startedAt?: number;
  /**
   * IPs taken while another node still held them, whose connections tracked elsewhere wait to
   * be flushed until it lets go (reconcile's deferFlush): their mark, and since when (monotonic ms).
   */
  private readonly pendingFlush = new Map<string, { tracked: TrackedElsewhere; since: number }>();

  constructor(private readonly d: ApplierDeps) {}

  get steppingBack(): boolean {
    return this.failures >= STEP_BACK_AFTER_FAILURES;
  }

  /** How long the running reconcile has run (0 when none runs). */
  runningMs(): number {
    return this.startedAt === undefined ? 0 : monotonicMs() - this.startedAt;
  }

  async apply(decision: Decision, force: boolean): Promise<void> {
    const { node, telemetry } = this.d;
    const started = monotonicMs();
    this.startedAt = started;
    try {
      const mustApply = force || decision.announce.size > 0;
      const unless = mustApply ? '' : this.appliedPlan;
      const planned = await this.d.planner.plan(node.config.digest, decision.owners, unless);
      if (!planned.desired) {
        node.applied(node.held, decision); // the kernel has it already
        return void (await this.flushPending(decision));
      }
      const { fingerprint } = planned;
      const { changes, announcedAt } = await reconcile(
        planned.desired,
        (have) => this.d.planner.change(fingerprint, have),
        {
          state: this.d.state,
          log: this.d.log,
          announce: decision.announce,
          connections: this.d.sync?.(),
          deferFlush: (t) => decision.claimedElsewhere.has(t.ip) && this.deferFlush(t),
          stateFirst: (ip) => decision.claimedElsewhere.has(ip),
        },
      );
      const ms = monotonicMs() - started;
      telemetry.observeReconcile(ms, true);
      if (force && changes.length && planned.fingerprint === this.appliedPlan) {
        telemetry.counters.repairs++;
        this.d.log.warn({ changes }, 'repaired changes made by someone else');
      }
      this.appliedPlan = planned.fingerprint;
      this.countTakeovers(decision, changes, ms, announcedAt);
      this.setHeld(new Set(decision.hold.keys()), decision);
      await this.flushPending(decision);
      this.succeeded(ms);
    } catch (e) {
      await this.failed(e as Error, decision, monotonicMs() - started);
    } finally {
      this.startedAt = undefined;
    }
  }

  /** Takes over the flush of `ip`'s connections tracked elsewhere (reconcile's deferFlush): true. */
  private deferFlush(tracked: TrackedElsewhere): true {
    const { ip } = tracked;
    // From this take-over: an IP let go and taken again waits afresh.
    this.pendingFlush.set(ip, { tracked, since: monotonicMs() });
    // Bounded: the node handing it over lets go within a Down interval (make-before-break).
    setTimeout(() => this.d.schedule(false), this.d.node.downAfterMs + 1).unref();
    this.d.log.info(
      { ip },
      `${ip} is still held by another node: connections tracked for it elsewhere are flushed once it lets go`,
    );
    return true;
  }

  /** Flushes what was deferred, once no other node claims the IP (or a Down interval has passed); forgets IPs no longer held. */
  private async flushPending(decision: Decision): Promise<void> {
    for (const [ip, { tracked, since }] of [...this.pendingFlush]) {
      if (!decision.hold.has(ip)) {
        this.pendingFlush.delete(ip);
        continue;
      }
      if (decision.claimedElsewhere.has(ip) && monotonicMs() - since <= this.d.node.downAfterMs) continue;
      this.pendingFlush.delete(ip);
      const changes: string[] = [];
      await flushTrackedElsewhere(tracked, this.d.log, changes);
      for (const c of changes) this.d.log.info({ change: c }, c);
    }
  }

  private succeeded(ms: number): void {
    const wasSteppingBack = this.steppingBack;
    this.failures = 0;
    if (wasSteppingBack) {
      this.d.log.info('reconcile works again: taking part again');
      this.d.steppingBackChanged();
    }
    if (this.notifiedReady) return;
    this.notifiedReady = true;
    this.d.notifier.send({ READY: 1 });
    this.d.log.info({ ms: Math.round(ms) }, 'first reconcile done: service ready');
  }

  private async failed(e: Error, decision: Decision, ms: number): Promise<void> {
    this.d.telemetry.observeReconcile(ms, false);
    this.appliedPlan = '';
    this.failures++;
    this.d.log.error({ err: e.message, failures: this.failures }, `reconcile failed; retrying in ${RETRY_MS} ms`);
    if (this.failures === STEP_BACK_AFTER_FAILURES) {
      const why = `stepping back: ${STEP_BACK_AFTER_FAILURES} reconciles failed in a row; handing floating IPs over until one succeeds`;
      this.d.log.error({ err: e.message }, why);
      this.d.steppingBackChanged();
    }
    const unknown = new Set([...this.d.node.held, ...decision.hold.keys()]);
    this.setHeld(await heldAddresses().catch(() => unknown));
    setTimeout(() => this.d.schedule(true), RETRY_MS).unref();
  }

  private countTakeovers(decision: Decision, changes: readonly string[], ms: number, announcedAt?: number): void {
    const taken = [...decision.take];
    const counters = this.d.telemetry.counters;
    counters.takeovers += taken.length;
    counters.garps += changes.filter((c) => c.startsWith('gratuitous ARP')).length;
    const at = announcedAt ?? monotonicMs();
    for (const ip of taken)
      if (changes.some((c) => c.startsWith(`gratuitous ARP for ${ip} `))) this.d.telemetry.announced(ip, at);
    if (taken.length) this.d.log.info({ ips: taken, ms: Math.round(ms) }, `took over ${taken.join(', ')}`);
  }

  /** What the kernel holds now; peers hear at once when that changed. */
  setHeld(held: ReadonlySet<string>, decision?: Decision): void {
    this.d.sync?.()?.setHeld(held);
    if (this.d.node.applied(held, decision)) this.d.sendHeartbeat();
  }
}
