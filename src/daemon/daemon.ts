import type { Server } from 'node:net';
import type { Logger } from 'pino';
import type { ClusterKeys } from '../config/key.js';
import type { Config } from '../config/model.js';
import { ClusterNode } from '../cluster/node.js';
import { park } from '../dataplane/park.js';
import { StateStore } from '../dataplane/state.js';
import { monotonicMs } from '../util/time.js';
import { Applier } from './applier.js';
import { ConnectionSync } from './connection-sync.js';
import { controlHandler } from './commands.js';
import { serveControl } from './control.js';
import { Heartbeats } from './heartbeats.js';
import { KernelWatch } from './kernel-watch.js';
import { Planner } from './planner.js';
import { monotonicUsec, silentNotifier, type Notifier } from './sdnotify.js';
import { Telemetry, type Counters } from './telemetry.js';

// The daemon's lifecycle and its reconcile loop: every change (a peer, a timer, the
// kernel, a reload, a command) asks the loop to decide again; the loop asks the
// ClusterNode what to hold, plans, and converges the kernel. What decides lives in
// src/cluster and src/plan (pure); heartbeat I/O, telemetry, reload and the control
// commands have files of their own beside this one.

export interface DaemonOptions {
  readonly config: Config;
  readonly node: string;
  /** The cluster keys: the first signs, every one verifies. */
  readonly key: ClusterKeys;
  readonly stateDir: string;
  /** Larger on every start, whatever the clock does (incarnation.ts), so peers tell a restart from a replay. */
  readonly incarnation: bigint;
  readonly log: Logger;
  /** systemd's notify socket (READY, RELOADING, STATUS, WATCHDOG); omitted outside systemd. */
  readonly notifier?: Notifier;
}

/** How often the daemon re-plans without a trigger (new cgroups), and repairs in full. */
const REPLAN_MS = 10_000;
const FULL_RECONCILE_MS = 60_000;
/**
 * Listening after start: at least one Down interval (to hear every live claim), and at
 * least 2 s, so that daemons of a cluster that boots at once (whose start-ups are
 * seconds apart on a loaded host) all join before the first takes part, and the IPs
 * spread instead of going to whoever was first. After carrier returns: one interval.
 */
const START_LISTEN_MS = 2_000;
/** How long a stopping node waits for the new owners to claim what it hands over, beyond one Down interval. */
const STOP_GRACE_MS = 100;

export class Daemon {
  private readonly node: ClusterNode;
  private readonly log: Logger;
  private readonly state: StateStore;
  private readonly notifier: Notifier;
  private readonly telemetry: Telemetry;
  private readonly heartbeats: Heartbeats;
  private readonly kernel: KernelWatch;
  private readonly planner: Planner;
  private readonly applier: Applier;
  private control?: Server;
  private sync?: ConnectionSync;
  private readonly timers: NodeJS.Timeout[] = [];
  private listenTimer?: NodeJS.Timeout;
  private wakeTimer?: NodeJS.Timeout;

  /** The kernel follows decisions (after the first listening period): until then it is left as it was found. */
  private applying = false;
  /** After the host is parked (stop) the loop may change nothing again. */
  private stopped = false;
  /** Drained by `egress-natd drain`; the node also drains while its reconciles keep failing. */
  private drainedByOperator = false;
  private dirty = false;
  private force = false;
  private loop?: Promise<void>;
  private readonly loopWaiters = new Set<() => void>();
  private reloading: Promise<boolean> = Promise.resolve(true);

  constructor(private readonly opts: DaemonOptions) {
    this.node = new ClusterNode(opts.config, opts.node, opts.key, opts.incarnation);
    this.log = opts.log.child({ node: this.node.self.name });
    this.state = new StateStore(opts.stateDir);
    this.notifier = opts.notifier ?? silentNotifier;
    this.telemetry = new Telemetry(this.node, this.notifier, this.log);
    this.heartbeats = new Heartbeats(this.node, this.telemetry.counters, this.log, {
      peersChanged: () => {
        this.sync?.peersChanged();
        this.schedule(false);
      },
    });
    this.kernel = new KernelWatch(() => this.node.self.interface, this.log, {
      repair: () => {
        if (this.applying && !this.node.condition.leaving) this.schedule(true);
      },
      carrier: (up) => this.onCarrier(up),
    });
    this.planner = new Planner(opts.config, opts.node, (e) => {
      // Without its planner the daemon can change nothing: stop, and let systemd restart it.
      this.log.fatal({ err: e.message }, 'the planner thread failed');
      process.exitCode = 1;
      void this.stop();
    });
    this.applier = new Applier({
      node: this.node,
      planner: this.planner,
      state: this.state,
      log: this.log,
      telemetry: this.telemetry,
      notifier: this.notifier,
      sendHeartbeat: () => this.heartbeats.send(),
      schedule: (force) => this.schedule(force),
      steppingBackChanged: () => this.updateDraining(),
      sync: () => this.sync,
    });
  }

  get counters(): Counters {
    return this.telemetry.counters;
  }

  async start(): Promise<void> {
    // A SIGHUP during start-up waits for it: a reload swaps sockets that start opens.
    let started!: () => void;
    this.reloading = new Promise<boolean>((ok) => (started = () => ok(true)));
    await this.boot();
    started();
  }

  private async boot(): Promise<void> {
    const iface = this.node.self.interface;
    // What an earlier daemon left stays until the first decision goes from it straight to the
    // new plan (no release: nothing may leak meanwhile), with its mark indexes kept.
    const { applied } = await this.state.load().catch(() => ({ applied: undefined }));
    if (applied?.node === this.node.self.name) await this.planner.keepIndexes(new Map(Object.entries(applied.indexes)));
    const carrier = await this.kernel.start().catch((e: Error) => {
      throw new Error(`${e.message} (the interface of node ${this.node.self.name})`);
    });
    this.node.setCondition({ carrier });
    await this.heartbeats.open();
    const syncSettings = this.node.config.cluster.connectionSync;
    if (syncSettings)
      this.sync = await ConnectionSync.open(
        {
          config: () => this.node.config,
          self: () => this.node.self,
          keys: () => this.node.hmacKey,
          incarnation: this.opts.incarnation,
          log: this.log,
        },
        syncSettings,
      );
    this.telemetry.connectionSync = () => this.sync?.snapshot();
    this.control = await serveControl(
      this.opts.stateDir,
      controlHandler({
        node: this.node,
        counters: this.counters,
        history: this.telemetry.history,
        traffic: () => this.telemetry.traffic(),
        snatPorts: () => this.telemetry.snat.check(),
        connectionSync: () => this.sync?.snapshot(),
        setDraining: (draining) => this.setDraining(draining),
        afterLoop: (done, timeoutMs) => this.afterLoop(done, timeoutMs),
      }),
    );
    await this.telemetry.serveMetrics(this.node.config);
    this.timers.push(setInterval(() => this.schedule(false), REPLAN_MS));
    this.timers.push(setInterval(() => this.schedule(true), FULL_RECONCILE_MS));
    this.telemetry.startWatchdog(() => this.applier.runningMs());
    this.telemetry.watchStalls();
    this.telemetry.snat.start();
    const { incarnation } = this.node;
    const watchdogMs = this.notifier.watchdogIntervalMs;
    this.log.info(
      { incarnation: String(incarnation), carrier, interface: iface, digest: this.node.config.digest, watchdogMs },
      'started: listening before taking part',
    );
    this.heartbeats.send();
    this.telemetry.updateStatus();
    if (carrier) this.listen(Math.max(this.node.downAfterMs, START_LISTEN_MS));
    else {
      // Without carrier it can own nothing, but it still steers this host's traffic (and tells systemd it is up).
      this.applying = true;
      this.schedule(true);
    }
  }

  /** Like VRRP's master-down timer: hear every live peer's claims before taking anything. */
  private listen(ms: number): void {
    this.node.setCondition({ listened: false });
    clearTimeout(this.listenTimer);
    this.listenTimer = setTimeout(() => {
      this.node.setCondition({ listened: true });
      this.applying = true;
      this.log.info('ready: taking part in the election');
      this.heartbeats.send();
      this.schedule(true);
    }, ms);
  }

  private onCarrier(carrier: boolean): void {
    if (this.node.condition.leaving) return;
    this.node.setCondition({ carrier });
    this.log.warn(
      { interface: this.node.self.interface },
      carrier ? 'carrier back: listening before taking part again' : 'no carrier: giving up floating IPs',
    );
    if (carrier) this.listen(this.node.downAfterMs);
    else {
      clearTimeout(this.listenTimer);
      this.node.setCondition({ listened: false });
    }
    this.heartbeats.send();
    this.schedule(false);
  }

  setDraining(draining: boolean): void {
    this.drainedByOperator = draining;
    this.log.info(draining ? 'draining: handing floating IPs over' : 'undrained: taking part again');
    this.updateDraining();
  }

  /** Drains while the operator says so or reconciles keep failing; peers hear of a change at once. */
  private updateDraining(): void {
    if (!this.node.setCondition({ draining: this.drainedByOperator || this.applier.steppingBack })) return;
    this.heartbeats.send();
    this.schedule(false);
  }

  /**
   * SIGHUP. A bad file changes nothing: every error is logged with FILE:LINE:COL and the
   * daemon goes on with the config it has. A good one is applied as a difference: the
   * reconciler touches only what changed, so unchanged floating IPs and policies keep
   * flowing. Reloads run one at a time.
   */
  reload(): Promise<boolean> {
    this.reloading = this.reloading.then(
      () => this.doReload(),
      () => this.doReload(),
    );
    return this.reloading;
  }

  private async doReload(): Promise<boolean> {
    if (this.node.condition.leaving) return false;
    const file = this.node.config.file;
    this.notifier.send({ RELOADING: 1, MONOTONIC_USEC: String(monotonicUsec()), STATUS: `reloading ${file}` });
    this.telemetry.forgetStatus();
    const ok = await this.applyReload(file);
    this.counters.reloads[ok ? 'ok' : 'failed']++;
    this.notifier.send({ READY: 1 });
    this.telemetry.updateStatus();
    return ok;
  }

  private async applyReload(file: string): Promise<boolean> {
    const before = this.node.config;
    const r = await this.planner.load(file, this.node.hmacKey, before.digest);
    for (const w of r.warnings) this.log.warn({ file }, w);
    const reject = (errors: readonly string[]): false => {
      for (const e of errors) this.log.error({ file }, e);
      const n = errors.length;
      this.log.error(
        { file, errors: n, digest: before.digest },
        `reload rejected (${n} error${n === 1 ? '' : 's'}): still running on the previous config ${before.digest.slice(0, 12)}; nothing changed`,
      );
      return false;
    };
    if (!r.ok) return reject(r.errors);
    if (r.unchanged) {
      this.log.info({ file, digest: r.config.digest }, 'reload: the config is unchanged');
      return true;
    }
    let transport;
    try {
      transport = await this.heartbeats.prepare(r.config, r.self);
    } catch (e) {
      return reject([`${file}: error: cannot open the new heartbeat transport: ${(e as Error).message}`]);
    }
    // Keys that crossed a thread arrive as bytes: Buffers again.
    this.node.reconfigure(
      r.config,
      r.hmacKey.map((k) => Buffer.from(k)),
    );
    this.heartbeats.reconfigured(transport);
    this.reconfigureSync(before.cluster.connectionSync, r.config.cluster.connectionSync);
    await this.telemetry.serveMetrics(r.config);
    this.log.info(
      { file, from: before.digest, to: r.config.digest, ...r.summary },
      `reloaded ${file}: applying the difference`,
    );
    this.heartbeats.send(); // the new digest, at once
    this.schedule(false);
    await this.idle();
    return true;
  }

  /** Connection sync takes a new list of protocols at once; turning it on or off, or another port, needs a restart. */
  private reconfigureSync(from: Config['cluster']['connectionSync'], to: Config['cluster']['connectionSync']): void {
    if (this.sync && to && to.port === from?.port) return this.sync.reconfigure(to);
    if (JSON.stringify(from) !== JSON.stringify(to))
      this.log.warn(
        { from: from ?? 'off', to: to ?? 'off' },
        'cluster.connectionSync: turning it on or off, or another port, takes effect at the next restart',
      );
  }

  /** Resolves when no reconcile is running or asked for. */
  private async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  /**
   * Resolves once `done()` holds after a pass of the loop that began after this call (a
   * pass is asked for here): before it, the applied state predates the caller's change.
   */
  afterLoop(done: () => boolean, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        this.loopWaiters.delete(check);
        resolve();
      };
      const check = () => done() && finish();
      const timer = setTimeout(finish, timeoutMs);
      this.loopWaiters.add(check);
      this.schedule(false);
    });
  }

  /**
   * Announces that it leaves, hands over what it holds (bounded), parks the host (no floating
   * IP; steering kept, needing no daemon: docs/design.md, "Stop and start"), stops.
   */
  async stop(): Promise<void> {
    if (this.node.condition.leaving) return;
    this.node.setCondition({ leaving: true });
    this.heartbeats.stopExpiry();
    const holds = [...this.node.held];
    this.log.info({ holds }, 'stopping: announcing it to the cluster');
    this.notifier.send({ STOPPING: 1, STATUS: `stopping: handing over ${holds.join(', ') || 'nothing'}` });
    for (let i = 0; i < 3; i++) this.heartbeats.send();
    this.schedule(false);
    await this.afterLoop(() => this.node.held.size === 0, this.node.downAfterMs + STOP_GRACE_MS);
    await this.loop;
    this.stopped = true;
    await this.loop;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.listenTimer);
    clearTimeout(this.wakeTimer);
    this.kernel.close();
    this.heartbeats.close();
    this.sync?.close();
    this.control?.close();
    this.telemetry.close();
    await this.planner.close();
    const { changes, steering } = await park(this.node.config, this.node.self.name, {
      state: this.state,
      log: this.log,
    });
    this.notifier.close();
    this.log.info(
      { changes: changes.length, steering },
      'stopped: floating IPs given up; steering kept without them (egress-natd release removes it)',
    );
  }

  private schedule(force: boolean): void {
    if (this.stopped) return;
    this.dirty = true;
    this.force ||= force;
    this.loop ??= this.runLoop();
  }

  private async runLoop(): Promise<void> {
    try {
      await this.run();
    } finally {
      this.loop = undefined;
      if (this.dirty) this.schedule(false); // asked for while the loop was finishing
    }
  }

  private async run(): Promise<void> {
    while (this.dirty) {
      this.dirty = false;
      const force = this.force;
      this.force = false;
      if (!this.applying && !this.node.condition.leaving) continue; // still listening
      await this.decideAndApply(force);
    }
    // Every change of peers, config or holdings passes here: tell systemd, the log and waiters.
    this.telemetry.update();
    for (const check of [...this.loopWaiters]) check();
  }

  private async decideAndApply(force: boolean): Promise<void> {
    const decision = this.node.decide(monotonicMs());
    this.telemetry.ownerChanges(decision.ownerChanges);
    this.wakeAt(decision.wakeAt);
    for (const ip of decision.reannounce)
      this.log.info({ ip }, `${ip} was claimed by another node too; this node keeps it and announces it again`);
    await this.applier.apply(decision, force);
  }

  /** Decides again when a make-before-break hold runs out, if nothing else did first. */
  private wakeAt(at: number | undefined): void {
    clearTimeout(this.wakeTimer);
    if (at === undefined) return;
    this.wakeTimer = setTimeout(() => this.schedule(false), Math.max(0, at - monotonicMs()) + 1);
    this.wakeTimer.unref();
  }
}
