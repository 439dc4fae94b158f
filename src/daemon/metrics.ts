import type { Server } from 'node:http';
import type { DropReason } from '../cluster/protocol.js';
import { POLICY_STATES, type PolicyStateName } from './policy-state.js';
import type { SyncStats } from './connection-sync.js';
import type { PortPressure } from './snat-ports.js';
import type { Traffic } from './traffic.js';
import { CONTENT_TYPE, Histogram, render, type Family, type Sample } from './prometheus.js';

// Prometheus metrics, read from the daemon at scrape time: the daemon keeps plain
// counters and a view of the cluster; nothing here is on the heartbeat path.

export interface NodeSnapshot {
  readonly name: string;
  readonly up: boolean;
  readonly eligible: boolean;
  readonly draining: boolean;
  readonly carrier: boolean;
  readonly digest?: string;
  /** Alive but its heartbeats fail authentication. */
  readonly authFailing: boolean;
}

export interface MetricsSnapshot {
  readonly node: string;
  readonly ready: boolean;
  readonly digest: string;
  readonly drift: boolean;
  readonly floatingIPs: readonly {
    readonly ip: string;
    readonly gateway: string;
    readonly owner?: string;
    readonly held: boolean;
  }[];
  readonly nodes: readonly NodeSnapshot[];
  /** Each policy's state (status.ts, policy-state.ts). */
  readonly policies: readonly { readonly name: string; readonly state: PolicyStateName }[];
  readonly heartbeatsSent: number;
  readonly heartbeatsReceived: number;
  readonly rejected: Readonly<Record<DropReason, number>>;
  /** Bad MACs from each configured peer's address. */
  readonly authFailures: readonly { readonly node: string; readonly count: number }[];
  /** More peers fail authentication than pass: this node takes nothing it does not hold. */
  readonly outvoted: boolean;
  readonly reconcileErrors: number;
  readonly repairs: number;
  readonly takeovers: number;
  /** Ownership changes from one node to another that this node saw, by the election's reason. */
  readonly failovers: Readonly<Record<string, number>>;
  readonly garps: number;
  readonly reloads: { readonly ok: number; readonly failed: number };
  readonly loopStalls: number;
  /** Packets the relay guards of the IPs this node owns dropped, by reason (nft's counters, read at scrape time). */
  readonly relayDropped: readonly { readonly ip: string; readonly reason: string; readonly packets: number }[];
  /** What flows through this node (the kernel's named counters); absent when they cannot be read. */
  readonly traffic?: Traffic;
  /** SNAT port pressure per floating IP this node held at the last check. */
  readonly snatPorts?: Readonly<Record<string, PortPressure>>;
  /** Connection sync's health; absent when it is disabled. */
  readonly connectionSync?: SyncStats;
}

const P = 'egress_natd_';
const bit = (b: boolean): number => (b ? 1 : 0);
const gauge = (name: string, help: string, samples: Sample[]): Family => ({
  name: P + name,
  help,
  type: 'gauge',
  samples,
});
const counter = (name: string, help: string, samples: Sample[]): Family => ({
  name: P + name,
  help,
  type: 'counter',
  samples,
});
const byLabel = (label: string, counts: Readonly<Record<string, number>>): Sample[] =>
  Object.entries(counts).map(([value, n]) => ({ labels: { [label]: value }, value: n }));
const perNode = (s: MetricsSnapshot, read: (n: NodeSnapshot) => boolean): Sample[] =>
  s.nodes.map((n) => ({ labels: { node: n.name }, value: bit(read(n)) }));

/** Every family, from one snapshot: a pure function, unit-tested. */
export function families(s: MetricsSnapshot): Family[] {
  return [
    gauge('ready', 'Whether this node takes part in the election (1) or still listens (0).', [
      { labels: { node: s.node }, value: bit(s.ready) },
    ]),
    gauge(
      'floating_ip_owner',
      'The elected owner of each floating IP (1 for its owner; owner="" with 0 when none).',
      s.floatingIPs.map((f) => ({
        labels: { ip: f.ip, gateway: f.gateway, owner: f.owner ?? '' },
        value: bit(f.owner !== undefined),
      })),
    ),
    gauge(
      'floating_ip_held',
      'Whether this node holds the floating IP in its kernel.',
      s.floatingIPs.map((f) => ({ labels: { ip: f.ip }, value: bit(f.held) })),
    ),
    gauge(
      'node_up',
      'Whether each node is Up (heartbeats arrive).',
      perNode(s, (n) => n.up),
    ),
    gauge(
      'node_eligible',
      'Whether each node may own floating IPs now (Up, ready, not draining, carrier).',
      perNode(s, (n) => n.eligible),
    ),
    gauge(
      'node_draining',
      'Whether each node is draining.',
      perNode(s, (n) => n.draining),
    ),
    gauge(
      'policy_state',
      "Each policy's state: 1 for the one it is in (Active: its IP has an owner; NoGateway: none now; Invalid: the config can never make it flow).",
      s.policies.flatMap((p) =>
        POLICY_STATES.map((state) => ({ labels: { policy: p.name, state }, value: bit(p.state === state) })),
      ),
    ),
    gauge(
      'config_info',
      "The digest of each node's config, as its heartbeats carry it.",
      s.nodes.filter((n) => n.digest).map((n) => ({ labels: { node: n.name, digest: n.digest! }, value: 1 })),
    ),
    gauge('config_drift', "Whether a node that is Up runs a config whose digest differs from this node's.", [
      { value: bit(s.drift) },
    ]),
    counter(
      'peer_auth_failures_total',
      "Datagrams from a configured peer's address whose MAC failed (another cluster key?), by peer.",
      s.authFailures.map((a) => ({ labels: { node: a.node }, value: a.count })),
    ),
    gauge(
      'peer_auth_failing',
      'Whether each node is alive but its heartbeats fail authentication.',
      perNode(s, (n) => n.authFailing),
    ),
    gauge('auth_outvoted', 'Whether more peers fail authentication than pass, so this node takes no new IP.', [
      { value: bit(s.outvoted) },
    ]),
    counter('heartbeats_sent_total', 'Heartbeats sent.', [{ value: s.heartbeatsSent }]),
    counter('heartbeats_received_total', 'Authenticated heartbeats accepted.', [{ value: s.heartbeatsReceived }]),
    counter(
      'heartbeats_rejected_total',
      'Datagrams on the heartbeat port that were dropped, by reason.',
      byLabel('reason', s.rejected),
    ),
    counter(
      'failovers_total',
      'Floating IPs that moved from one node to another, as this node saw it, by reason.',
      byLabel('reason', s.failovers),
    ),
    counter('takeovers_total', 'Floating IPs this node added (took over).', [{ value: s.takeovers }]),
    counter('reconcile_errors_total', 'Reconciles that failed (and were retried).', [{ value: s.reconcileErrors }]),
    counter('event_loop_stalls_total', 'Seconds in which the event loop stalled for over half a heartbeat interval.', [
      { value: s.loopStalls },
    ]),
    counter('repairs_total', "Reconciles that undid changes someone else made to egress-natd's objects.", [
      { value: s.repairs },
    ]),
    counter('gratuitous_arp_total', 'Announcements of a floating IP by gratuitous ARP (each a burst of 3).', [
      { value: s.garps },
    ]),
    counter('reloads_total', 'Config reloads (SIGHUP), by result.', byLabel('result', s.reloads)),
    counter(
      'relay_dropped_total',
      "Packets that arrived on a floating IP this node owns and that no policy of that IP selects: reason source (not a source of its policies) or destination (not to that policy's destinations).",
      s.relayDropped.map((d) => ({ labels: { ip: d.ip, reason: d.reason }, value: d.packets })),
    ),
    ...trafficFamilies(s.traffic),
    gauge(
      'snat_connections',
      'Connections tracked with the floating IP as translated source, on its owner (at the last check, every 30 s).',
      Object.entries(s.snatPorts ?? {}).map(([ip, p]) => ({ labels: { ip }, value: p.connections })),
    ),
    gauge(
      'snat_port_usage_ratio',
      "Share of the SNAT source port range (1024-65535) the floating IP's busiest destination (address, port, protocol) takes; new connections there fail at 1.",
      Object.entries(s.snatPorts ?? {}).map(([ip, p]) => ({ labels: { ip }, value: p.busiest?.usage ?? 0 })),
    ),
    ...(s.connectionSync ? syncFamilies(s.connectionSync) : []),
  ];
}

/** Connection sync (README, "Connection survival"): whether the candidates have the owners' connections. */
export function syncFamilies(c: SyncStats): Family[] {
  const peers = Object.entries(c.peers);
  return [
    gauge(
      'sync_peer_in_sync',
      'Whether a complete sweep of connections went to or came from the peer in the last 30 s.',
      peers.map(([node, p]) => ({ labels: { node }, value: bit(p.inSync) })),
    ),
    gauge(
      'sync_entries',
      'Connections this node holds for connection sync: cached (of IPs it may take) or sending (of IPs it owns, at its last sweep).',
      [
        ...Object.entries(c.cached).map(([ip, n]) => ({ labels: { ip, role: 'cached' }, value: n })),
        ...Object.entries(c.sending).map(([ip, n]) => ({ labels: { ip, role: 'sending' }, value: n })),
      ],
    ),
    counter('sync_datagrams_total', 'Connection sync datagrams, by direction (received: accepted only).', [
      { labels: { direction: 'sent' }, value: c.datagramsSent },
      { labels: { direction: 'received' }, value: c.datagramsReceived },
    ]),
    counter('sync_dropped_total', 'Connection sync datagrams rejected, by reason.', byLabel('reason', c.dropped)),
    counter('sync_installed_total', 'Synced connections installed when this node took a floating IP, by result.', [
      { labels: { result: 'installed' }, value: c.installed },
      { labels: { result: 'existing' }, value: c.existing },
      { labels: { result: 'failed' }, value: c.installFailed },
    ]),
    counter(
      'sync_errors_total',
      'Connection sync errors: datagrams not sent, kernel events lost (each followed by a full sweep).',
      [
        { labels: { kind: 'send' }, value: c.sendErrors },
        { labels: { kind: 'events-lost' }, value: c.eventsLost },
      ],
    ),
    gauge('sync_lag_seconds', 'How long the oldest change waited before the last batch sent it.', [
      { value: c.lagMs / 1000 },
    ]),
  ];
}

/** Per floating IP and per policy, from the kernel's named counters: this node's share (sum over nodes for the cluster). */
function trafficFamilies(t: Traffic | undefined): Family[] {
  const ips = Object.entries(t?.egressIPs ?? {});
  const policies = Object.entries(t?.policies ?? {});
  const perIP = (read: (c: Traffic['egressIPs'][string]) => number): Sample[] =>
    ips.map(([ip, c]) => ({ labels: { ip }, value: read(c) }));
  const perPolicy = (read: (c: Traffic['policies'][string]) => number): Sample[] =>
    policies.map(([policy, c]) => ({ labels: { policy }, value: read(c) }));
  return [
    counter(
      'egress_ip_packets_total',
      'Packets that left this node with the floating IP as source (SNATed by this node as its owner).',
      perIP((c) => c.packets),
    ),
    counter(
      'egress_ip_bytes_total',
      'Bytes that left this node with the floating IP as source.',
      perIP((c) => c.bytes),
    ),
    counter(
      'egress_ip_connections_total',
      'Connections (conntrack entries) this node started with the floating IP as source.',
      perIP((c) => c.connections),
    ),
    counter(
      'no_gateway_dropped_total',
      "Packets of this node's selected traffic dropped because the floating IP had no owner (noGateway: drop).",
      perIP((c) => c.noGatewayDropped),
    ),
    counter(
      'policy_packets_total',
      "Packets this node's own sources (workloads, processes) sent into the policy.",
      perPolicy((c) => c.packets),
    ),
    counter(
      'policy_bytes_total',
      "Bytes this node's own sources sent into the policy.",
      perPolicy((c) => c.bytes),
    ),
  ];
}

/** The process's own, under the names Prometheus' client libraries use. */
function processFamilies(): Family[] {
  const cpu = process.cpuUsage();
  return [
    {
      name: 'process_cpu_seconds_total',
      help: 'Total user and system CPU time spent in seconds.',
      type: 'counter',
      samples: [{ value: (cpu.user + cpu.system) / 1e6 }],
    },
    {
      name: 'process_resident_memory_bytes',
      help: 'Resident memory size in bytes.',
      type: 'gauge',
      samples: [{ value: process.memoryUsage.rss() }],
    },
    {
      name: 'process_start_time_seconds',
      help: 'Start time of the process since unix epoch in seconds.',
      type: 'gauge',
      samples: [{ value: Math.round(Date.now() / 1000 - process.uptime()) }],
    },
  ];
}

/** What bounds the metrics endpoint: one local scraper needs little, a stuck or hostile client may hold little. */
export interface MetricsLimits {
  readonly maxConnections: number;
  /** A request's headers must arrive within this (a slowloris client is cut off). */
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this. */
  readonly keepAliveTimeoutMs: number;
  /** How often Node checks the two timeouts above (its default is 30 s). */
  readonly checkIntervalMs: number;
}

export const METRICS_LIMITS: MetricsLimits = {
  maxConnections: 16,
  headersTimeoutMs: 5000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5000,
  checkIntervalMs: 1000,
};

export class Metrics {
  private readonly reconcile = new Histogram([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
  /** Around the default Down interval (300 ms): a takeover takes tens of ms after it. */
  private readonly takeover = new Histogram([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]);

  constructor(private readonly snapshot: () => Promise<MetricsSnapshot>) {}

  observeReconcile(seconds: number, ok: boolean): void {
    this.reconcile.observe({ result: ok ? 'ok' : 'error' }, seconds);
  }

  /** A takeover after the owner went Down: seen Down → gratuitous ARP sent, on this node. */
  observeTakeover(seconds: number): void {
    this.takeover.observe({}, seconds);
  }

  async render(): Promise<string> {
    return render([
      ...families(await this.snapshot()),
      {
        name: `${P}reconcile_duration_seconds`,
        help: 'Time to converge the kernel to the desired state, by result.',
        type: 'histogram',
        samples: this.reconcile.samples(),
      },
      {
        name: `${P}takeover_duration_seconds`,
        help: "Takeovers of a floating IP by this node after its owner went Down: from seeing the owner Down to this node's gratuitous ARP.",
        type: 'histogram',
        samples: this.takeover.samples(),
      },
      ...processFamilies(),
    ]);
  }

  /** GET /metrics on 127.0.0.1:port only: metrics name the cluster's nodes and addresses. */
  async serve(port: number, onError: (e: Error) => void, limits = METRICS_LIMITS): Promise<Server> {
    // Loaded here: a daemon without metrics does not carry the HTTP server (about 1 MB).
    const { createServer } = await import('node:http');
    const options = {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      connectionsCheckingInterval: limits.checkIntervalMs,
    };
    const server = createServer(options, (req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try GET /metrics\n');
        return;
      }
      this.render().then(
        (text) => res.writeHead(200, { 'content-type': CONTENT_TYPE }).end(text),
        (e: Error) => {
          onError(e);
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${e.message}\n`);
        },
      );
    });
    // Beyond the cap, new connections are dropped; the timeouts free the slots again.
    server.maxConnections = limits.maxConnections;
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
