import { createServer, type Server } from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DropReason } from '../cluster/protocol.js';

// Prometheus metrics, read from the daemon at scrape time: the daemon keeps plain
// counters and a view of the cluster; nothing here is on the heartbeat path.

export interface NodeSnapshot {
  readonly name: string;
  readonly up: boolean;
  readonly eligible: boolean;
  readonly draining: boolean;
  readonly carrier: boolean;
  readonly digest?: string;
}

export interface MetricsSnapshot {
  readonly node: string;
  readonly ready: boolean;
  readonly digest: string;
  readonly drift: boolean;
  readonly floatingIPs: readonly { readonly ip: string; readonly gateway: string; readonly owner?: string; readonly held: boolean }[];
  readonly nodes: readonly NodeSnapshot[];
  readonly heartbeatsSent: number;
  readonly heartbeatsReceived: number;
  readonly rejected: Readonly<Record<DropReason, number>>;
  readonly reconcileErrors: number;
  readonly repairs: number;
  readonly takeovers: number;
  /** Ownership changes from one node to another that this node saw, by the election's reason. */
  readonly failovers: Readonly<Record<string, number>>;
  readonly garps: number;
  readonly reloads: { readonly ok: number; readonly failed: number };
}

const PREFIX = 'egress_natd_';

/** A counter whose value is the daemon's own count, copied in at scrape time. */
function mirrored(registry: Registry, name: string, help: string, read: (s: MetricsSnapshot) => number, get: () => MetricsSnapshot): void {
  new Counter({
    name: PREFIX + name, help, registers: [registry],
    collect() {
      this.reset();
      this.inc(read(get()));
    },
  });
}

/** A counter with one label, whose values are the daemon's own counts by that label. */
function byLabel(registry: Registry, name: string, help: string, label: string, read: () => Readonly<Record<string, number>>): void {
  new Counter({
    name: PREFIX + name, help, labelNames: [label], registers: [registry],
    collect() {
      this.reset();
      for (const [value, n] of Object.entries(read())) this.inc({ [label]: value }, n);
    },
  });
}

export class Metrics {
  readonly registry = new Registry();
  private readonly reconcile: Histogram<'result'>;

  constructor(snapshot: () => MetricsSnapshot) {
    const r = this.registry;
    collectDefaultMetrics({ register: r });
    const labelled = <L extends string>(name: string, help: string, labelNames: L[], fill: (g: Gauge<L>, s: MetricsSnapshot) => void) =>
      new Gauge<L>({ name: PREFIX + name, help, labelNames, registers: [r], collect() { this.reset(); fill(this, snapshot()); } });

    labelled('ready', 'Whether this node takes part in the election (1) or still listens (0).', ['node'], (g, s) => g.set({ node: s.node }, s.ready ? 1 : 0));
    labelled('floating_ip_owner', 'The elected owner of each floating IP (1 for its owner; owner="" with 0 when none).', ['ip', 'gateway', 'owner'], (g, s) => {
      for (const f of s.floatingIPs) g.set({ ip: f.ip, gateway: f.gateway, owner: f.owner ?? '' }, f.owner ? 1 : 0);
    });
    labelled('floating_ip_held', 'Whether this node holds the floating IP in its kernel.', ['ip'], (g, s) => {
      for (const f of s.floatingIPs) g.set({ ip: f.ip }, f.held ? 1 : 0);
    });
    labelled('node_up', 'Whether each node is Up (heartbeats arrive).', ['node'], (g, s) => {
      for (const n of s.nodes) g.set({ node: n.name }, n.up ? 1 : 0);
    });
    labelled('node_eligible', 'Whether each node may own floating IPs now (Up, ready, not draining, carrier).', ['node'], (g, s) => {
      for (const n of s.nodes) g.set({ node: n.name }, n.eligible ? 1 : 0);
    });
    labelled('node_draining', 'Whether each node is draining.', ['node'], (g, s) => {
      for (const n of s.nodes) g.set({ node: n.name }, n.draining ? 1 : 0);
    });
    labelled('config_info', 'The digest of each node\'s config, as its heartbeats carry it.', ['node', 'digest'], (g, s) => {
      for (const n of s.nodes) if (n.digest) g.set({ node: n.name, digest: n.digest }, 1);
    });
    labelled('config_drift', 'Whether a node that is Up runs a config whose digest differs from this node\'s.', [], (g, s) => g.set(s.drift ? 1 : 0));

    mirrored(r, 'heartbeats_sent_total', 'Heartbeats sent.', (s) => s.heartbeatsSent, snapshot);
    mirrored(r, 'heartbeats_received_total', 'Authenticated heartbeats accepted.', (s) => s.heartbeatsReceived, snapshot);
    byLabel(r, 'heartbeats_rejected_total', 'Datagrams on the heartbeat port that were dropped, by reason.', 'reason', () => snapshot().rejected);
    byLabel(r, 'failovers_total', 'Floating IPs that moved from one node to another, as this node saw it, by reason.', 'reason', () => snapshot().failovers);
    mirrored(r, 'takeovers_total', 'Floating IPs this node added (took over).', (s) => s.takeovers, snapshot);
    mirrored(r, 'reconcile_errors_total', 'Reconciles that failed (and were retried).', (s) => s.reconcileErrors, snapshot);
    mirrored(r, 'repairs_total', 'Reconciles that undid changes someone else made to egress-natd\'s objects.', (s) => s.repairs, snapshot);
    mirrored(r, 'gratuitous_arp_total', 'Announcements of a floating IP by gratuitous ARP (each a burst of 3).', (s) => s.garps, snapshot);
    byLabel(r, 'reloads_total', 'Config reloads (SIGHUP), by result.', 'result', () => snapshot().reloads);
    this.reconcile = new Histogram({
      name: `${PREFIX}reconcile_duration_seconds`, help: 'Time to converge the kernel to the desired state, by result.', labelNames: ['result'], registers: [r],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    });
  }

  observeReconcile(seconds: number, ok: boolean): void {
    this.reconcile.observe({ result: ok ? 'ok' : 'error' }, seconds);
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  /** GET /metrics on 127.0.0.1:port only: metrics name the cluster's nodes and addresses. */
  serve(port: number, onError: (e: Error) => void): Promise<Server> {
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try GET /metrics\n');
        return;
      }
      this.render().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (e: Error) => {
          onError(e);
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`);
        },
      );
    });
    return new Promise((ok, fail) => {
      server.once('error', (e) => fail(new Error(`metrics: cannot listen on 127.0.0.1:${port}: ${e.message}`)));
      server.listen(port, '127.0.0.1', () => {
        server.removeAllListeners('error');
        server.on('error', onError);
        ok(server);
      });
    });
  }
}
