import type { Server as HttpServer } from 'node:http';
import type { Logger } from 'pino';
import type { SyncStats } from './connection-sync.js';
import type { Config } from '../config/model.js';
import type { ClusterNode, OwnerChange } from '../cluster/node.js';
import { DROP_REASONS, type DropReason } from '../cluster/protocol.js';
import { readCounters, type CounterValue } from '../dataplane/nft.js';
import { floatingIPs } from '../plan/desired.js';
import { RELAY_REASONS, relayCounter } from '../plan/naming.js';
import { FailoverHistory } from './history.js';
import { policyStates } from './policy-state.js';
import { Metrics, type MetricsSnapshot } from './metrics.js';
import type { Notifier } from './sdnotify.js';
import { SnatWatch } from './snat-watch.js';
import { StallWatch } from './stalls.js';
import { traffic, type Traffic } from './traffic.js';
import { authentication, configDrift, statusLine, type NodeStatus, type View } from './status.js';

// What the daemon tells people: counters, Prometheus metrics, systemd's STATUS line and
// watchdog, and config-drift warnings. Nothing here decides anything or changes the kernel.

export interface Counters {
  heartbeatsSent: number;
  heartbeatsReceived: number;
  dropped: Record<DropReason, number>;
  /** Datagrams from a configured peer's address whose MAC failed, by that peer. */
  authFailures: Record<string, number>;
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
  /** Seconds in which the event loop stalled for more than half a heartbeat interval. */
  loopStalls: number;
}

export const newCounters = (): Counters => ({
  heartbeatsSent: 0,
  heartbeatsReceived: 0,
  dropped: Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>,
  authFailures: {},
  reconciles: 0,
  reconcileErrors: 0,
  lastReconcileMs: 0,
  takeovers: 0,
  repairs: 0,
  garps: 0,
  failovers: {},
  reloads: { ok: 0, failed: 0 },
  loopStalls: 0,
});

/** The cluster as `status`, metrics and STATUS= show it: owners as applied, never recomputed. */
export function viewOf(node: ClusterNode): View {
  const nodes = new Map<string, NodeStatus>();
  for (const n of node.nodes()) {
    const { name, up, digest, ...rest } = n;
    nodes.set(name, { state: up ? 'Up' : 'Down', ...rest, ...(digest !== undefined ? { digest } : {}) });
  }
  return { self: node.self.name, nodes, owners: node.owners };
}

export class Telemetry {
  readonly counters = newCounters();
  /** The last ownership changes, with the outages this node measured (status). */
  readonly history: FailoverHistory;
  private readonly metrics: Metrics;
  private metricsServer?: HttpServer;
  private metricsPort?: number;
  private lastStatusLine = '';
  /** "node:digest" of the nodes that ran another config at the last check. */
  private driftWarned = new Set<string>();
  /** Peers warned about for failing authentication, not verified since; whether they outvoted this node. */
  private readonly authWarned = new Set<string>();
  private outvotedWarned = false;
  private watchdogTimer?: NodeJS.Timeout;
  private readonly stalls = new StallWatch();
  /** SNAT port pressure on the IPs this node holds (a conntrack dump on a slow timer; `status` asks afresh). */
  readonly snat: SnatWatch;

  constructor(
    private readonly node: ClusterNode,
    private readonly notifier: Notifier,
    private readonly log: Logger,
  ) {
    this.metrics = new Metrics(() => this.snapshot());
    this.history = new FailoverHistory(() => this.node.self.name);
    this.snat = new SnatWatch(() => [...this.node.held], log);
  }

  observeReconcile(ms: number, ok: boolean): void {
    if (ok) {
      this.counters.reconciles++;
      this.counters.lastReconcileMs = ms;
    } else this.counters.reconcileErrors++;
    this.metrics.observeReconcile(ms / 1000, ok);
  }

  /** Logs and records every owner change, and counts those from one node to another as failovers. */
  ownerChanges(changes: readonly OwnerChange[]): void {
    this.history.record(changes, Date.now());
    for (const { ip, from, to, reason, cause } of changes) {
      if (from !== undefined && to !== undefined)
        this.counters.failovers[reason] = (this.counters.failovers[reason] ?? 0) + 1;
      this.log.info(
        // The cause is a field: the message keeps the form log readers (and tests) match.
        { ip, from: from ?? null, to: to ?? null, reason, cause },
        `owner of ${ip}: ${from ?? '(none)'} -> ${to ?? '(none)'} (${reason})`,
      );
    }
  }

  /** This node's gratuitous ARP for `ip` left at `monotonicMs`: the end of an outage, if its owner had gone Down. */
  announced(ip: string, monotonicMs: number): void {
    const ms = this.history.announced(ip, monotonicMs);
    if (ms === undefined) return;
    this.metrics.observeTakeover(ms / 1000);
    this.log.info({ ip, outageMs: ms }, `took ${ip} over ${ms} ms after its owner was seen Down`);
  }

  /** After every pass of the reconcile loop: STATUS= and drift, from one view. */
  update(): void {
    const view = viewOf(this.node);
    this.checkDrift(view);
    this.checkAuth(view);
    this.updateStatus(view);
  }

  /**
   * Warns once when a configured peer starts failing authentication, and again only after
   * it was verified in between (a peer that pauses is not warned about twice); never per
   * datagram. Warns once when such peers outvote this node. Junk from other addresses
   * stays at debug (heartbeats.ts).
   */
  private checkAuth(view: View): void {
    const { failing, outvoted } = authentication(view);
    for (const peer of failing.filter((p) => !this.authWarned.has(p))) {
      this.authWarned.add(peer);
      this.log.warn(
        { peer, authFailures: this.counters.authFailures[peer] ?? 0 },
        `heartbeats from ${peer} fail authentication: it runs with another cluster key? Its floating IPs are not taken over while it is heard`,
      );
    }
    for (const peer of [...this.authWarned].filter((p) => view.nodes.get(p)?.state === 'Up')) {
      this.authWarned.delete(peer);
      this.log.info({ peer }, `heartbeats from ${peer} authenticate again`);
    }
    if (outvoted && !this.outvotedWarned)
      this.log.warn(
        { failing },
        `more peers fail authentication (${failing.join(', ')}) than pass: the cluster key on this host is probably wrong; it takes no floating IP it does not hold`,
      );
    else if (!outvoted && this.outvotedWarned) this.log.info('no longer outvoted by peers that fail authentication');
    this.outvotedWarned = outvoted;
  }

  updateStatus(view = viewOf(this.node)): void {
    const c = this.node.condition;
    const line = statusLine(this.node.config, view, { ready: c.listened, draining: c.draining, carrier: c.carrier });
    if (line === this.lastStatusLine) return;
    this.lastStatusLine = line;
    this.notifier.send({ STATUS: line });
  }

  /** The next update sends STATUS= even if the line is the same (after a RELOADING=1). */
  forgetStatus(): void {
    this.lastStatusLine = '';
  }

  /**
   * Warns once when a node starts to run another config (a node and digest not warned
   * about yet); a rolling reload that converges node by node warns once, not per node.
   */
  private checkDrift(view: View): void {
    const digest = this.node.config.digest;
    const drift = configDrift(view);
    const current = new Set(drift.map((d) => `${d.node}:${d.digest}`));
    const fresh = [...current].filter((k) => !this.driftWarned.has(k));
    if (fresh.length) {
      const who = drift.map((d) => `${d.node} runs ${d.digest.slice(0, 12)}`).join(', ');
      this.log.warn(
        { digest, differ: drift },
        `config differs across the cluster: ${who}; this node runs ${digest.slice(0, 12)}`,
      );
    } else if (!current.size && this.driftWarned.size)
      this.log.info({ digest }, 'configs agree again across the cluster');
    this.driftWarned = current;
  }

  /**
   * WATCHDOG=1 from the event loop every half timeout, unless `hungMs()` says a reconcile
   * hangs longer than the timeout (a hung nft or netlink call is worth a restart).
   */
  startWatchdog(hungMs: () => number): void {
    const intervalMs = this.notifier.watchdogIntervalMs;
    if (!intervalMs) return;
    this.watchdogTimer = setInterval(() => {
      const ms = hungMs();
      if (ms > intervalMs * 2)
        return void this.log.error({ ms: Math.round(ms) }, 'reconcile hangs: not pinging the watchdog');
      this.notifier.send({ WATCHDOG: 1 });
    }, intervalMs);
  }

  /** Serves the metrics on the config's port (again, if it changed). Metrics are for people: failing is logged, never fatal. */
  async serveMetrics(config: Config): Promise<void> {
    const port = config.cluster.metrics?.port;
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

  /** Logs and counts every second in which the event loop stalled for more than half a heartbeat interval. */
  watchStalls(): void {
    const interval = () => this.node.config.cluster.heartbeat.intervalMs;
    this.stalls.start(
      () => interval() / 2,
      (ms) => {
        this.counters.loopStalls++;
        const down = this.node.downAfterMs;
        this.log.warn(
          { ms },
          `event loop stalled ${ms} ms (heartbeats every ${interval()} ms; peers call a node Down after ${down} ms)`,
        );
      },
    );
  }

  close(): void {
    this.stalls.stop();
    this.snat.stop();
    clearInterval(this.watchdogTimer);
    this.metricsServer?.close();
  }

  /** The kernel's named counters; a failed read is logged and gives none: it never fails a scrape or a status. */
  private async kernelCounters(): Promise<ReadonlyMap<string, CounterValue> | undefined> {
    try {
      return await readCounters();
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'cannot read the nft counters');
      return undefined;
    }
  }

  /** What flows through this node, from the kernel's counters (undefined if they cannot be read). */
  async traffic(): Promise<Traffic | undefined> {
    const counters = await this.kernelCounters();
    return counters && traffic(this.node.config, counters);
  }

  /** The relay guards' drop counters of the IPs this node owns (the others have none). */
  private relayDropped(counters: ReadonlyMap<string, CounterValue>): MetricsSnapshot['relayDropped'] {
    return floatingIPs(this.node.config).flatMap((f) =>
      RELAY_REASONS.flatMap((reason) => {
        const c = counters.get(relayCounter(f.ip, reason));
        return c === undefined ? [] : [{ ip: f.text, reason, packets: c.packets }];
      }),
    );
  }

  /** Connection sync's health, when it runs (the daemon opens it after this). */
  connectionSync: () => SyncStats | undefined = () => undefined;

  private async snapshot(): Promise<MetricsSnapshot> {
    const counters = await this.kernelCounters();
    const sync = this.connectionSync();
    const v = viewOf(this.node);
    const config = this.node.config;
    const c = this.counters;
    return {
      node: this.node.self.name,
      ready: this.node.condition.listened,
      digest: config.digest,
      drift: configDrift(v).length > 0,
      floatingIPs: floatingIPs(config).map((f) => {
        const owner = v.owners.get(f.text);
        return {
          ip: f.text,
          gateway: f.gateway,
          ...(owner !== undefined ? { owner } : {}),
          held: this.node.held.has(f.text),
        };
      }),
      nodes: config.nodes.map((n) => {
        const s = v.nodes.get(n.name);
        const digest = s?.digest ? { digest: s.digest } : {};
        return {
          name: n.name,
          up: s?.state === 'Up',
          eligible: s?.eligible ?? false,
          draining: s?.draining ?? false,
          carrier: s?.carrier ?? false,
          authFailing: s?.authFailing ?? false,
          ...digest,
        };
      }),
      policies: Object.entries(policyStates(config, v)).map(([name, p]) => ({ name, state: p.state })),
      heartbeatsSent: c.heartbeatsSent,
      heartbeatsReceived: c.heartbeatsReceived,
      rejected: c.dropped,
      authFailures: config.nodes
        .filter((n) => n.name !== this.node.self.name)
        .map((n) => ({ node: n.name, count: c.authFailures[n.name] ?? 0 })),
      outvoted: authentication(v).outvoted,
      reconcileErrors: c.reconcileErrors,
      repairs: c.repairs,
      takeovers: c.takeovers,
      failovers: c.failovers,
      garps: c.garps,
      reloads: c.reloads,
      loopStalls: c.loopStalls,
      relayDropped: counters ? this.relayDropped(counters) : [],
      snatPorts: this.snat.last,
      ...(sync ? { connectionSync: sync } : {}),
      ...(counters ? { traffic: traffic(config, counters) } : {}),
    };
  }
}
