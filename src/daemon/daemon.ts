import type { Server } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Config, NodeSpec, Policy } from '../config/model.js';
import { formatDiagnostic, hasErrors, sortDiagnostics } from '../config/diagnostics.js';
import { readKey } from '../config/key.js';
import { loadConfig } from '../config/load.js';
import { isEligible, Membership } from '../cluster/membership.js';
import { elect, type Election, type LiveNode } from '../cluster/ownership.js';
import { decode, DROP_REASONS, encode, Flag, type DropReason } from '../cluster/protocol.js';
import { openTransport, type Transport, type TransportOptions } from '../cluster/transport.js';
import { hostFacts } from '../dataplane/facts.js';
import { Netlink } from '../dataplane/netlink.js';
import { heldAddresses, reconcile, release } from '../dataplane/reconcile.js';
import { StateStore } from '../dataplane/state.js';
import { watchKernel, type KernelEvent, type Watcher } from '../dataplane/watch.js';
import { floatingIPs, plan, type DesiredState } from '../plan/desired.js';
import { MACVLAN_PREFIX, macvlanName, NFT_TABLE, ROUTE_TABLE_BASE } from '../plan/naming.js';
import { formatAddress, parseAddress } from '../util/ip.js';
import { sendGratuitousArp } from '../dataplane/arp.js';
import { serveControl, type Request } from './control.js';
import { Metrics, type MetricsSnapshot } from './metrics.js';
import { monotonicUsec, silentNotifier, type Notifier } from './sdnotify.js';
import { configDrift, egressList, status, statusLine, type NodeStatus, type View } from './status.js';

// The daemon: heartbeats in and out, membership, election, and the reconciler of the
// data plane driven by every change. Everything that decides is in src/cluster and
// src/plan (pure); this file only wires events to them and to the kernel.

export interface DaemonOptions {
  readonly config: Config;
  readonly node: string;
  readonly key: Buffer;
  readonly stateDir: string;
  readonly log: Logger;
  /** systemd's notify socket (READY, RELOADING, STATUS, WATCHDOG); omitted outside systemd. */
  readonly notifier?: Notifier;
}

/** How often the daemon re-plans without a trigger (new cgroups), and repairs in full. */
const REPLAN_MS = 10_000;
const FULL_RECONCILE_MS = 60_000;
const RETRY_MS = 1_000;
const REPAIR_DEBOUNCE_MS = 20;
/**
 * Listening after start: at least one Down interval (to hear every live claim), and at
 * least 2 s, so that daemons of a cluster that boots at once (whose start-ups are
 * seconds apart on a loaded host) all join before the first takes part, and the IPs
 * spread instead of going to whoever was first. After carrier returns: one interval.
 */
const START_LISTEN_MS = 2_000;

export interface Counters {
  heartbeatsSent: number;
  heartbeatsReceived: number;
  dropped: Record<DropReason, number>;
  reconciles: number;
  reconcileErrors: number;
  lastReconcileMs: number;
  takeovers: number;
  repairs: number;
  /** Announcements started (each is GARP_COUNT gratuitous ARPs, spaced). */
  garps: number;
  /** Owner changes from one node to another, by the election's reason. */
  failovers: Record<string, number>;
  reloads: { ok: number; failed: number };
}

const now = (): number => performance.now();
/** `ip monitor` lines about our rules and routes: they name one of our tables (ROUTE_TABLE_BASE + 1..255). */
const OUR_TABLE_IN_LINE = /\b(?:table|lookup) (\d+)\b/;
const mentionsOurTable = (line: string): boolean => {
  const t = Number(OUR_TABLE_IN_LINE.exec(line)?.[1]);
  return t > ROUTE_TABLE_BASE && t <= ROUTE_TABLE_BASE + 255;
};
const sameSet = (a: ReadonlySet<string>, b: ReadonlySet<string>): boolean => a.size === b.size && [...a].every((x) => b.has(x));

export class Daemon {
  private config: Config;
  private self: NodeSpec;
  private key: Buffer;
  private readonly membership: Membership;
  private readonly log: Logger;
  private readonly state: StateStore;
  /** Larger on every start, so peers tell a restart from a replay. */
  private readonly incarnation = BigInt(Date.now()) * 1000n;
  private seq = 0n;

  /** Has listened for a full Down interval since start or since carrier returned. */
  private ready = false;
  /** The first election has run: until then the kernel is left as it was found. */
  private settled = false;
  private draining = false;
  private carrier = true;
  private leaving = false;
  private stopped = false;
  /** Floating IPs the kernel holds, as of the last reconcile: what heartbeats claim. */
  private held = new Set<string>();
  private election: Election = { owners: new Map(), reasons: new Map() };
  private readonly handoverSince = new Map<string, number>();
  /** Mark index of each floating IP, as last planned: a reload keeps them (see HostFacts.indexes). */
  private indexes = new Map<string, number>();
  /** IPs this node holds that another node claims too (until the other lets go). */
  private contested = new Set<string>();

  private lastApplied = '';
  private dirty = false;
  private force = false;
  private loop?: Promise<void>;
  private repairTimer?: NodeJS.Timeout;
  private expiryTimer?: NodeJS.Timeout;
  private settleTimer?: NodeJS.Timeout;
  private readonly timers: NodeJS.Timeout[] = [];
  private heartbeatTimer?: NodeJS.Timeout;
  private transport?: Transport;
  private transportKey = '';
  private watcher?: Watcher;
  private control?: Server;
  private readonly notifier: Notifier;
  private readonly metrics: Metrics;
  private metricsServer?: HttpServer;
  private metricsPort?: number;
  /** READY=1 was sent (after the first successful reconcile). */
  private notifiedReady = false;
  private lastStatusLine = '';
  /** "node:digest" of the nodes that ran another config at the last check. */
  private driftWarned = new Set<string>();
  private reloading: Promise<boolean> = Promise.resolve(true);
  /** monotonic ms when the running reconcile started: the watchdog stops pinging if it hangs. */
  private reconcileStartedAt?: number;

  readonly counters: Counters = {
    heartbeatsSent: 0,
    heartbeatsReceived: 0,
    dropped: Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>,
    reconciles: 0,
    reconcileErrors: 0,
    lastReconcileMs: 0,
    takeovers: 0,
    repairs: 0,
    garps: 0,
    failovers: {},
    reloads: { ok: 0, failed: 0 },
  };

  constructor(private readonly opts: DaemonOptions) {
    this.config = opts.config;
    this.key = opts.key;
    this.self = selfIn(opts.config, opts.node);
    this.membership = new Membership(opts.config, this.self.name);
    this.log = opts.log.child({ node: this.self.name });
    this.state = new StateStore(opts.stateDir);
    this.notifier = opts.notifier ?? silentNotifier;
    this.metrics = new Metrics(() => this.metricsSnapshot());
    // Names that cannot be put on the wire are a config problem: say so now, not from a timer.
    this.heartbeat();
  }

  async start(): Promise<void> {
    // A SIGHUP during start-up waits for it: a reload swaps sockets that start opens.
    let started!: () => void;
    this.reloading = new Promise<boolean>((ok) => { started = () => ok(true); });
    await this.boot();
    started();
  }

  private async boot(): Promise<void> {
    this.carrier = await this.readCarrier();
    this.watcher = watchKernel((e) => this.onKernelEvent(e), (e) => this.log.warn({ err: e.message }, 'kernel monitor'));
    await this.watcher.ready;
    const options = transportOptions(this.config, this.self);
    this.transport = await this.openTransport(options);
    this.transportKey = JSON.stringify(options);
    this.control = await serveControl(this.opts.stateDir, (r) => this.onRequest(r));
    await this.serveMetrics();
    this.restartHeartbeatTimer();
    this.timers.push(setInterval(() => this.schedule(false), REPLAN_MS));
    this.timers.push(setInterval(() => this.schedule(true), FULL_RECONCILE_MS));
    const watchdogMs = this.notifier.watchdogIntervalMs;
    if (watchdogMs) this.timers.push(setInterval(() => this.pingWatchdog(watchdogMs * 2), watchdogMs));
    this.log.info({ incarnation: String(this.incarnation), carrier: this.carrier, digest: this.config.digest, watchdogMs }, 'started: listening before taking part');
    this.sendHeartbeat();
    this.updateStatus();
    if (this.carrier) this.startSettling(Math.max(this.membership.timeoutMs, START_LISTEN_MS));
    else {
      // Without carrier it can own nothing, but it still steers this host's traffic (and tells systemd it is up).
      this.settled = true;
      this.schedule(true);
    }
  }

  private restartHeartbeatTimer(): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => this.sendHeartbeat(), this.config.cluster.heartbeat.intervalMs);
  }

  private openTransport(options: TransportOptions): Promise<Transport> {
    return openTransport(options, (msg, source) => this.onDatagram(msg, source), (e) => this.log.debug({ err: e.message }, 'heartbeat socket'));
  }

  /** Metrics are for people: failing to serve them is logged, never fatal. */
  private async serveMetrics(): Promise<void> {
    const port = this.config.cluster.metrics?.port;
    if (port === this.metricsPort && (this.metricsServer || port === undefined)) return;
    this.metricsServer?.close();
    this.metricsServer = undefined;
    this.metricsPort = port;
    if (port === undefined) return;
    try {
      this.metricsServer = await this.metrics.serve(port, (e) => this.log.warn({ err: e.message }, 'metrics'));
      this.log.info({ port }, `metrics on http://127.0.0.1:${port}/metrics`);
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'metrics are off');
    }
  }

  /** WATCHDOG=1 from the event loop, unless a reconcile hangs (a hung nft or netlink call is worth a restart). */
  private pingWatchdog(timeoutMs: number): void {
    if (this.reconcileStartedAt !== undefined && now() - this.reconcileStartedAt > timeoutMs) {
      this.log.error({ ms: Math.round(now() - this.reconcileStartedAt) }, 'reconcile hangs: not pinging the watchdog');
      return;
    }
    this.notifier.send({ WATCHDOG: 1 });
  }

  private updateStatus(view = this.view()): void {
    const line = statusLine(this.config, view, { ready: this.ready, draining: this.draining, carrier: this.carrier });
    if (line === this.lastStatusLine) return;
    this.lastStatusLine = line;
    this.notifier.send({ STATUS: line });
  }

  /**
   * Warns once when a node starts to run another config (a node and digest not warned
   * about yet); a rolling reload that converges node by node warns once, not per node.
   */
  private checkDrift(view: View): void {
    const drift = configDrift(view);
    const now = new Set(drift.map((d) => `${d.node}:${d.digest}`));
    const fresh = [...now].filter((k) => !this.driftWarned.has(k));
    if (fresh.length) {
      this.log.warn({ digest: this.config.digest, differ: drift }, `config differs across the cluster: ${drift.map((d) => `${d.node} runs ${d.digest.slice(0, 12)}`).join(', ')}; this node runs ${this.config.digest.slice(0, 12)}`);
    } else if (!now.size && this.driftWarned.size) this.log.info({ digest: this.config.digest }, 'configs agree again across the cluster');
    this.driftWarned = now;
  }

  /**
   * SIGHUP. A bad file changes nothing: every error is logged with FILE:LINE:COL and the
   * daemon goes on with the config it has. A good one is applied as a difference: the
   * reconciler touches only what changed, so unchanged floating IPs and policies keep
   * flowing. Reloads run one at a time.
   */
  reload(): Promise<boolean> {
    this.reloading = this.reloading.then(() => this.doReload(), () => this.doReload());
    return this.reloading;
  }

  private async doReload(): Promise<boolean> {
    if (this.leaving) return false;
    const file = this.config.file;
    this.notifier.send({ RELOADING: 1, MONOTONIC_USEC: String(monotonicUsec()), STATUS: `reloading ${file}` });
    this.lastStatusLine = '';
    const ok = await this.applyReload(file);
    if (ok) this.counters.reloads.ok++;
    else this.counters.reloads.failed++;
    this.notifier.send({ READY: 1 });
    this.updateStatus();
    return ok;
  }

  private async applyReload(file: string): Promise<boolean> {
    const reject = (errors: string[]): false => {
      for (const e of errors) this.log.error({ file }, e);
      this.log.error({ file, errors: errors.length, digest: this.config.digest }, `reload rejected (${errors.length} error${errors.length === 1 ? '' : 's'}): still running on the previous config ${this.config.digest.slice(0, 12)}; nothing changed`);
      return false;
    };
    const { config, diagnostics } = loadConfig(file);
    const sorted = sortDiagnostics(diagnostics);
    for (const d of sorted.filter((d) => d.severity !== 'error')) this.log.warn({ file }, formatDiagnostic(d));
    if (!config || hasErrors(diagnostics)) return reject(sorted.filter((d) => d.severity === 'error').map(formatDiagnostic));
    let self: NodeSpec, key: Buffer;
    try {
      self = selfIn(config, this.self.name);
      key = readKey(config.cluster.heartbeat.keyFile);
      encode({ cluster: config.cluster.name, node: self.name, flags: 0, incarnation: 0n, seq: 0n, digest: config.digest, claims: [] }, key);
    } catch (e) {
      return reject([`${file}: error: ${(e as Error).message}`]);
    }
    if (config.digest === this.config.digest && key.equals(this.key)) {
      this.log.info({ file, digest: config.digest }, 'reload: the config is unchanged');
      return true;
    }
    // A changed transport is opened before the old one closes: a reload never goes deaf.
    const options = transportOptions(config, self);
    const optionsKey = JSON.stringify(options);
    let transport: Transport | undefined;
    if (optionsKey !== this.transportKey) {
      try {
        transport = await this.openTransport(options);
      } catch (e) {
        return reject([`${file}: error: cannot open the new heartbeat transport: ${(e as Error).message}`]);
      }
    }
    const before = this.config;
    this.config = config;
    this.self = self;
    this.key = key;
    this.membership.reconfigure(config);
    if (transport) {
      this.transport?.close();
      this.transport = transport;
      this.transportKey = optionsKey;
    }
    if (config.cluster.heartbeat.intervalMs !== before.cluster.heartbeat.intervalMs) this.restartHeartbeatTimer();
    this.armExpiry();
    await this.serveMetrics();
    this.log.info({ file, from: before.digest, to: config.digest, ...reloadSummary(before, config) }, `reloaded ${file}: applying the difference`);
    this.sendHeartbeat(); // the new digest, at once
    this.schedule(false);
    await this.idle();
    return true;
  }

  /** Resolves when no reconcile is running or asked for. */
  private async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  private metricsSnapshot(): MetricsSnapshot {
    const v = this.view();
    return {
      node: this.self.name,
      ready: this.ready,
      digest: this.config.digest,
      drift: configDrift(v).length > 0,
      floatingIPs: floatingIPs(this.config).map((f) => ({ ip: f.text, gateway: f.gateway, ...(v.owners.has(f.text) ? { owner: v.owners.get(f.text)! } : {}), held: this.held.has(f.text) })),
      nodes: this.config.nodes.map((n) => {
        const s = v.nodes.get(n.name);
        return { name: n.name, up: s?.state === 'Up', eligible: s?.eligible ?? false, draining: s?.draining ?? false, carrier: s?.carrier ?? false, ...(s?.digest ? { digest: s.digest } : {}) };
      }),
      heartbeatsSent: this.counters.heartbeatsSent,
      heartbeatsReceived: this.counters.heartbeatsReceived,
      rejected: this.counters.dropped,
      reconcileErrors: this.counters.reconcileErrors,
      repairs: this.counters.repairs,
      takeovers: this.counters.takeovers,
      failovers: this.counters.failovers,
      garps: this.counters.garps,
      reloads: this.counters.reloads,
    };
  }

  /** Announces that it leaves, hands over what it holds (bounded), removes everything, stops. */
  async stop(): Promise<void> {
    if (this.leaving) return;
    this.leaving = true;
    this.log.info({ holds: [...this.held] }, 'stopping: announcing it to the cluster');
    this.notifier.send({ STOPPING: 1, STATUS: `stopping: handing over ${[...this.held].join(', ') || 'nothing'}` });
    for (let i = 0; i < 3; i++) this.sendHeartbeat();
    this.schedule(false);
    const deadline = now() + this.membership.timeoutMs + 100;
    while (this.held.size && now() < deadline) await new Promise((r) => setTimeout(r, 5));
    await this.loop;
    this.stopped = true;
    await this.loop;
    for (const t of this.timers) clearInterval(t);
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.settleTimer);
    clearTimeout(this.repairTimer);
    clearTimeout(this.expiryTimer);
    this.watcher?.close();
    this.transport?.close();
    this.control?.close();
    this.metricsServer?.close();
    const { changes } = await release({ state: this.state, log: this.log });
    this.notifier.close();
    this.log.info({ changes: changes.length }, 'stopped: released everything egress-natd installed');
  }

  private startSettling(listenMs: number): void {
    this.ready = false;
    clearTimeout(this.settleTimer);
    // Like VRRP's master-down timer: hear every live peer's claims before taking anything.
    this.settleTimer = setTimeout(() => {
      this.ready = true;
      this.settled = true;
      this.log.info('ready: taking part in the election');
      this.sendHeartbeat();
      this.schedule(true);
    }, listenMs);
  }

  private flags(): number {
    return (this.ready ? Flag.READY : 0) | (this.draining ? Flag.DRAINING : 0) | (this.carrier ? 0 : Flag.NO_CARRIER) | (this.leaving ? Flag.LEAVING : 0);
  }

  private sendHeartbeat(): void {
    if (!this.transport) return;
    this.seq += 1n;
    this.transport.send(this.heartbeat());
    this.counters.heartbeatsSent++;
  }

  private heartbeat(): Buffer {
    return encode({
      cluster: this.config.cluster.name,
      node: this.self.name,
      flags: this.flags(),
      incarnation: this.incarnation,
      seq: this.seq,
      digest: this.config.digest,
      claims: [...this.held].sort(),
    }, this.key);
  }

  private onDatagram(buf: Buffer, source: string): void {
    // Nothing from the network may throw out of here.
    try {
      const d = decode(buf, this.key, this.config.cluster.name);
      if (!d.ok) return this.drop(d.reason, source);
      const r = this.membership.receive(d.msg, source, now());
      if (!r.accepted) return this.drop(r.reason, source);
      this.counters.heartbeatsReceived++;
      if (!this.expiryTimer) this.armExpiry();
      if (r.changed) {
        this.log.debug({ peer: r.peer.name, up: r.peer.up, flags: r.peer.flags, claims: r.peer.claims }, 'peer changed');
        this.schedule(false);
      }
    } catch (e) {
      this.log.error({ err: (e as Error).message, source }, 'heartbeat handling failed');
    }
  }

  private drop(reason: DropReason, source: string): void {
    this.counters.dropped[reason]++;
    // Logged at debug only: a flood of junk must not flood the journal.
    this.log.debug({ reason, source }, 'heartbeat dropped');
  }

  /**
   * One timer, at the earliest time a peer can time out. A heartbeat only ever moves a
   * peer's deadline later, so receiving never re-arms it: it fires, expires who is
   * due, and arms itself for the next deadline. Exact, and a few wake-ups a second.
   */
  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    const next = this.membership.nextExpiry();
    if (next === undefined || this.leaving) return;
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = undefined;
      this.expire();
      this.armExpiry();
    }, Math.max(0, Math.ceil(next - now())));
  }

  private expire(): void {
    const gone = this.membership.expire(now());
    for (const name of gone) this.log.info({ peer: name }, `node ${name} is Down: no heartbeat for ${this.membership.timeoutMs} ms`);
    if (gone.length) this.schedule(false);
  }

  private onKernelEvent(e: KernelEvent): void {
    const ours = e.source === 'nft' ? e.line.includes(NFT_TABLE) : e.line.includes(MACVLAN_PREFIX) || mentionsOurTable(e.line);
    if (e.source === 'ip' && new RegExp(`^\\d+: ${this.self.interface}[:@]`).test(e.line)) void this.checkCarrier();
    if (!ours || !this.settled || this.leaving) return;
    if (this.repairTimer) return;
    this.repairTimer = setTimeout(() => {
      this.repairTimer = undefined;
      this.schedule(true);
    }, REPAIR_DEBOUNCE_MS);
  }

  private async readCarrier(): Promise<boolean> {
    const nl = new Netlink();
    try {
      const link = (await nl.links()).find((l) => l.name === this.self.interface);
      if (!link) throw new Error(`interface ${this.self.interface} of node ${this.self.name} does not exist`);
      return link.up && link.carrier;
    } finally {
      nl.close();
    }
  }

  private async checkCarrier(): Promise<void> {
    const carrier = await this.readCarrier().catch(() => false);
    if (carrier === this.carrier || this.leaving) return;
    this.carrier = carrier;
    this.log.warn({ interface: this.self.interface }, carrier ? 'carrier back: listening before taking part again' : 'no carrier: giving up floating IPs');
    if (carrier) this.startSettling(this.membership.timeoutMs);
    else {
      clearTimeout(this.settleTimer);
      this.ready = false;
    }
    this.sendHeartbeat();
    this.schedule(false);
  }

  private schedule(force: boolean): void {
    if (this.stopped) return; // after release nothing may install anything again
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
      if (!this.settled && !this.leaving) continue; // still listening
      const desired = this.decide();
      const key = JSON.stringify([desired.nft, desired.rules, desired.routes, desired.macvlans, desired.sysctls]);
      if (key === this.lastApplied && !force) continue;
      const wanted = new Set(desired.macvlans.map((m) => m.address));
      const taking = new Set([...wanted].filter((ip) => !this.held.has(ip)));
      const started = now();
      this.reconcileStartedAt = started;
      try {
        const { changes } = await reconcile(desired, { state: this.state, log: this.log, announce: taking });
        this.counters.reconciles++;
        this.counters.lastReconcileMs = now() - started;
        this.metrics.observeReconcile(this.counters.lastReconcileMs / 1000, true);
        if (force && changes.length && key === this.lastApplied) {
          this.counters.repairs++;
          this.log.warn({ changes }, 'repaired changes made by someone else');
        }
        this.lastApplied = key;
        this.counters.takeovers += taking.size;
        this.counters.garps += changes.filter((c) => c.startsWith('gratuitous ARP')).length;
        if (taking.size) this.log.info({ ips: [...taking], ms: Math.round(this.counters.lastReconcileMs) }, `took over ${[...taking].join(', ')}`);
        this.setHeld(wanted);
        if (!this.notifiedReady) {
          this.notifiedReady = true;
          this.notifier.send({ READY: 1 });
          this.log.info({ ms: Math.round(this.counters.lastReconcileMs) }, 'first reconcile done: service ready');
        }
      } catch (e) {
        this.counters.reconcileErrors++;
        this.metrics.observeReconcile((now() - started) / 1000, false);
        this.lastApplied = '';
        this.log.error({ err: (e as Error).message }, `reconcile failed; retrying in ${RETRY_MS} ms`);
        this.setHeld(await heldAddresses().catch(() => new Set([...this.held, ...wanted])));
        setTimeout(() => this.schedule(true), RETRY_MS).unref();
      } finally {
        this.reconcileStartedAt = undefined;
      }
    }
    // Every change of peers, config or holdings passes here: tell systemd and the log.
    const view = this.view();
    this.checkDrift(view);
    this.updateStatus(view);
  }

  private setHeld(held: Set<string>): void {
    if (sameSet(held, this.held)) return;
    this.held = held;
    this.sendHeartbeat(); // claims changed: tell the others now, not at the next interval
  }

  private selfLive(): LiveNode {
    return {
      name: this.self.name,
      eligible: this.ready && this.carrier && !this.draining && !this.leaving,
      mayKeep: this.draining && this.carrier && !this.leaving,
      joining: !this.ready && this.carrier && !this.draining && !this.leaving,
    };
  }

  private elect(): Election {
    const live = [...this.membership.live(), this.selfLive()];
    const claims = [...this.membership.claims(), ...[...this.held].map((ip) => ({ ip, node: this.self.name }))];
    return elect(this.config, live, claims);
  }

  /** The election, then make-before-break: a node handing IPs over keeps them until the new owner claims them. */
  private decide(): DesiredState {
    const e = this.elect();
    this.logChanges(e);
    this.election = e;
    this.announceWins(e);
    const target = new Map(e.owners);
    // The election may give IPs to a joining node (so they wait for it); it takes them only once ready.
    if (!this.ready) for (const [ip, owner] of e.owners) if (owner === this.self.name && !this.held.has(ip)) target.delete(ip);
    const t = now();
    const peerClaims = this.membership.claims();
    for (const ip of this.held) {
      const to = target.get(ip);
      if (to === this.self.name) continue;
      const claimed = to !== undefined && peerClaims.some((c) => c.ip === ip && c.node === to);
      if ((this.leaving || this.draining) && to !== undefined && !claimed) {
        const since = this.handoverSince.get(ip) ?? t;
        if (!this.handoverSince.has(ip)) {
          this.handoverSince.set(ip, t);
          setTimeout(() => this.schedule(false), this.membership.timeoutMs + 1).unref();
        }
        if (t - since < this.membership.timeoutMs) {
          target.set(ip, this.self.name);
          continue;
        }
      }
      this.handoverSince.delete(ip);
    }
    const desired = plan(this.config, this.self.name, target, { ...hostFacts(this.config), indexes: this.indexes });
    this.indexes = new Map(desired.egress.map((e) => [e.ip, e.index]));
    return desired;
  }

  /**
   * After a partition heals, the switch may have learned the IP's MAC on the loser's port:
   * the winner of a conflict announces again (like a VRRP master hearing another master).
   */
  private announceWins(e: Election): void {
    const won = new Set([...e.reasons].filter(([ip, r]) => r === 'conflict' && e.owners.get(ip) === this.self.name && this.held.has(ip)).map(([ip]) => ip));
    for (const ip of won) {
      if (this.contested.has(ip)) continue;
      const a = parseAddress(ip);
      if (!a.ok) continue;
      this.log.info({ ip }, `${ip} was claimed by another node too; this node keeps it and announces it again`);
      void sendGratuitousArp(macvlanName(a.value), ip, (err) => this.log.error({ err: err.message }, 'gratuitous ARP failed'));
      this.counters.garps++;
    }
    this.contested = won;
  }

  private logChanges(e: Election): void {
    for (const [ip, reason] of e.reasons) {
      const before = this.election.owners.get(ip);
      const after = e.owners.get(ip);
      if (before === after) continue;
      if (before !== undefined && after !== undefined) this.counters.failovers[reason] = (this.counters.failovers[reason] ?? 0) + 1;
      this.log.info({ ip, from: before ?? null, to: after ?? null, reason }, `owner of ${ip}: ${before ?? '(none)'} -> ${after ?? '(none)'} (${reason})`);
    }
  }

  view(): View {
    const nodes = new Map<string, NodeStatus>();
    for (const p of this.membership.list()) {
      if (p.downReason === 'never-seen') continue;
      nodes.set(p.name, {
        state: p.up ? 'Up' : 'Down',
        eligible: p.up && isEligible(p.flags),
        draining: (p.flags & Flag.DRAINING) !== 0,
        carrier: (p.flags & Flag.NO_CARRIER) === 0,
        digest: p.digest,
        holds: p.up ? p.claims : [],
      });
    }
    const s = this.selfLive();
    nodes.set(this.self.name, { state: 'Up', eligible: s.eligible, draining: this.draining, carrier: this.carrier, digest: this.config.digest, holds: [...this.held].sort() });
    return { self: this.self.name, nodes, owners: this.elect().owners };
  }

  private async onRequest(r: Request): Promise<unknown> {
    switch (r.cmd) {
      case 'status':
        return { ...status(this.config, this.view()), counters: this.counters, ready: this.ready };
      case 'egress-list':
        return egressList(this.config, this.view());
      case 'drain':
        return this.setDraining(true);
      case 'undrain':
        return this.setDraining(false);
    }
  }

  /** Drain waits (bounded) until what this node held has moved, and says where it went. */
  private async setDraining(draining: boolean): Promise<unknown> {
    const before = [...this.held];
    this.draining = draining;
    this.log.info(draining ? 'draining: handing floating IPs over' : 'undrained: taking part again');
    this.sendHeartbeat();
    this.schedule(false);
    if (draining) {
      const deadline = now() + this.membership.timeoutMs + 500;
      // Done when everything still held is ours by election (no one else could take it).
      const handingOver = () => {
        const owners = this.elect().owners;
        return [...this.held].some((ip) => owners.get(ip) !== this.self.name);
      };
      while (now() < deadline && handingOver()) {
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const owners = this.elect().owners;
    return { draining, handedOver: Object.fromEntries(before.map((ip) => [ip, owners.get(ip) ?? null])), holds: [...this.held].sort() };
  }
}

function selfIn(config: Config, node: string): NodeSpec {
  const self = config.nodes.find((n) => n.name === node);
  if (!self) throw new Error(`node "${node}" is not in ${config.file} (known: ${config.nodes.map((n) => n.name).join(', ')})`);
  return self;
}

function transportOptions(config: Config, self: NodeSpec): TransportOptions {
  const hb = config.cluster.heartbeat;
  return {
    mode: hb.transport,
    port: hb.port,
    local: formatAddress(self.address),
    ...(hb.group ? { group: formatAddress(hb.group) } : {}),
    peers: config.nodes.filter((n) => n.name !== self.name).map((n) => formatAddress(n.address)),
  };
}

/** What a reload changes, by name, for the log line. */
export function reloadSummary(before: Config, after: Config): Record<string, string[]> {
  const diff = (a: readonly string[], b: readonly string[]) => ({ added: b.filter((x) => !a.includes(x)), removed: a.filter((x) => !b.includes(x)) });
  const ips = (c: Config) => floatingIPs(c).map((f) => f.text);
  const text = (p: Policy) => JSON.stringify(p, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
  const f = diff(ips(before), ips(after));
  const pNames = diff(before.policies.map((p) => p.name), after.policies.map((p) => p.name));
  const changedPolicies = after.policies.filter((p) => {
    const old = before.policies.find((q) => q.name === p.name);
    return old && text(old) !== text(p);
  }).map((p) => p.name);
  const n = diff(before.nodes.map((x) => x.name), after.nodes.map((x) => x.name));
  return {
    floatingIPsAdded: f.added, floatingIPsRemoved: f.removed,
    policiesAdded: pNames.added, policiesRemoved: pNames.removed, policiesChanged: changedPolicies,
    nodesAdded: n.added, nodesRemoved: n.removed,
  };
}
