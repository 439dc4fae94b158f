import t from 'tap';
import { families, syncFamilies, type MetricsSnapshot } from '../../src/daemon/metrics.js';
import { Histogram, render } from '../../src/daemon/prometheus.js';
import { syncStats } from '../helpers.js';

// The Prometheus text format, and what the daemon's snapshot turns into.

t.test('render: HELP, TYPE, samples; label values and help escaped', async (t) => {
  const text = render([
    { name: 'a_total', help: 'line one\nback\\slash', type: 'counter', samples: [{ value: 3 }] },
    {
      name: 'b',
      help: 'b',
      type: 'gauge',
      samples: [
        { labels: { x: 'say "hi"\n\\' }, value: 0.5 },
        { labels: { x: 'inf' }, value: Infinity },
      ],
    },
  ]);
  t.equal(
    text,
    [
      '# HELP a_total line one\\nback\\\\slash',
      '# TYPE a_total counter',
      'a_total 3',
      '# HELP b b',
      '# TYPE b gauge',
      'b{x="say \\"hi\\"\\n\\\\"} 0.5',
      'b{x="inf"} +Inf',
      '',
    ].join('\n'),
  );
});

t.test('histogram: cumulative buckets, +Inf, sum and count per label set', async (t) => {
  const h = new Histogram([0.1, 1]);
  for (const v of [0.05, 0.5, 2]) h.observe({ result: 'ok' }, v);
  h.observe({ result: 'error' }, 0.2);
  const lines = render([{ name: 'd_seconds', help: 'd', type: 'histogram', samples: h.samples() }]).split('\n');
  t.same(lines.slice(2, 7), [
    'd_seconds_bucket{result="ok",le="0.1"} 1',
    'd_seconds_bucket{result="ok",le="1"} 2',
    'd_seconds_bucket{result="ok",le="+Inf"} 3',
    'd_seconds_sum{result="ok"} 2.55',
    'd_seconds_count{result="ok"} 3',
  ]);
  t.ok(lines.includes('d_seconds_bucket{result="error",le="1"} 1'));
});

t.test('the snapshot: owners, node states, counters by reason', async (t) => {
  const s: MetricsSnapshot = {
    node: 'h1',
    ready: true,
    digest: 'a',
    drift: true,
    floatingIPs: [
      { ip: '10.0.0.100', gateway: 'g', owner: 'h2', held: false },
      { ip: '10.0.0.101', gateway: 'g', held: false },
    ],
    nodes: [
      { name: 'h1', up: true, eligible: true, draining: false, carrier: true, digest: 'a', authFailing: false },
      { name: 'h2', up: true, eligible: false, draining: true, carrier: true, digest: 'b', authFailing: false },
      { name: 'h3', up: false, eligible: false, draining: false, carrier: false, authFailing: true },
    ],
    policies: [
      { name: 'shop', state: 'Active' },
      { name: 'spare', state: 'NoGateway' },
    ],
    heartbeatsSent: 5,
    heartbeatsReceived: 7,
    rejected: {
      truncated: 0,
      oversized: 0,
      'bad-magic': 0,
      'bad-version': 0,
      malformed: 0,
      'other-cluster': 0,
      'bad-mac': 2,
      'unknown-node': 0,
      'wrong-source': 0,
      replay: 1,
    },
    authFailures: [
      { node: 'h2', count: 0 },
      { node: 'h3', count: 12 },
    ],
    outvoted: false,
    reconcileErrors: 0,
    repairs: 1,
    takeovers: 1,
    failovers: { assigned: 2 },
    garps: 3,
    reloads: { ok: 1, failed: 0 },
    loopStalls: 2,
    relayDropped: [
      { ip: '10.0.0.100', reason: 'source', packets: 4 },
      { ip: '10.0.0.100', reason: 'destination', packets: 0 },
    ],
    traffic: {
      egressIPs: {
        '10.0.0.100': {
          packets: 10,
          bytes: 840,
          connections: 2,
          noGatewayDropped: 0,
          relayDropped: { source: 4, destination: 0 },
        },
      },
      policies: { shop: { packets: 7, bytes: 500 } },
    },
  };
  const text = render(families(s));
  for (const line of [
    'egress_natd_floating_ip_owner{ip="10.0.0.100",gateway="g",owner="h2"} 1',
    'egress_natd_floating_ip_owner{ip="10.0.0.101",gateway="g",owner=""} 0',
    'egress_natd_node_draining{node="h2"} 1',
    'egress_natd_node_eligible{node="h2"} 0',
    'egress_natd_config_info{node="h2",digest="b"} 1',
    'egress_natd_config_drift 1',
    'egress_natd_heartbeats_rejected_total{reason="bad-mac"} 2',
    'egress_natd_heartbeats_rejected_total{reason="truncated"} 0',
    'egress_natd_failovers_total{reason="assigned"} 2',
    'egress_natd_reloads_total{result="failed"} 0',
    'egress_natd_event_loop_stalls_total 2',
    '# TYPE egress_natd_gratuitous_arp_total counter',
    'egress_natd_peer_auth_failures_total{node="h3"} 12',
    'egress_natd_peer_auth_failures_total{node="h2"} 0',
    'egress_natd_peer_auth_failing{node="h3"} 1',
    'egress_natd_peer_auth_failing{node="h2"} 0',
    'egress_natd_auth_outvoted 0',
    '# TYPE egress_natd_relay_dropped_total counter',
    'egress_natd_relay_dropped_total{ip="10.0.0.100",reason="source"} 4',
    'egress_natd_relay_dropped_total{ip="10.0.0.100",reason="destination"} 0',
    'egress_natd_policy_state{policy="shop",state="Active"} 1',
    'egress_natd_policy_state{policy="shop",state="NoGateway"} 0',
    'egress_natd_policy_state{policy="shop",state="Invalid"} 0',
    'egress_natd_policy_state{policy="spare",state="Active"} 0',
    'egress_natd_policy_state{policy="spare",state="NoGateway"} 1',
    'egress_natd_egress_ip_packets_total{ip="10.0.0.100"} 10',
    'egress_natd_egress_ip_bytes_total{ip="10.0.0.100"} 840',
    'egress_natd_egress_ip_connections_total{ip="10.0.0.100"} 2',
    'egress_natd_no_gateway_dropped_total{ip="10.0.0.100"} 0',
    'egress_natd_policy_packets_total{policy="shop"} 7',
    'egress_natd_policy_bytes_total{policy="shop"} 500',
  ])
    t.ok(text.split('\n').includes(line), line);
});

t.test('connection sync families', async (t) => {
  const text = render(
    syncFamilies({
      ...syncStats,
      cached: { '10.0.0.101': 1200 },
      sending: { '10.0.0.100': 345 },
      peers: { h2: { lastHeardMsAgo: 80, inSync: true }, h3: { lastHeardMsAgo: null, inSync: false } },
      dropped: { replay: 1 },
      lagMs: 42,
    }),
  );
  for (const line of [
    'egress_natd_sync_peer_in_sync{node="h2"} 1',
    'egress_natd_sync_peer_in_sync{node="h3"} 0',
    'egress_natd_sync_entries{ip="10.0.0.101",role="cached"} 1200',
    'egress_natd_sync_entries{ip="10.0.0.100",role="sending"} 345',
    'egress_natd_sync_datagrams_total{direction="sent"} 10',
    'egress_natd_sync_dropped_total{reason="replay"} 1',
    'egress_natd_sync_installed_total{result="existing"} 3',
    'egress_natd_sync_errors_total{kind="events-lost"} 1',
    'egress_natd_sync_lag_seconds 0.042',
  ])
    t.ok(text.includes(`${line}\n`), line);
});
