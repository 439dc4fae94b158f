import t from 'tap';
import { formatStatus, type StatusReply } from '../../src/daemon/status-text.js';
import { status } from '../../src/daemon/status.js';
import { loadValid, syncStats } from '../helpers.js';

// `status -o text`: the daemon's answer as tables, and what it says when a part is missing.

const base = (): StatusReply => ({
  ...status(loadValid(), {
    self: 'worker1',
    nodes: new Map([
      ['worker1', { state: 'Up', eligible: true, draining: false, carrier: true, holds: ['192.168.1.100'] }],
    ]),
    owners: new Map([['192.168.1.100', 'worker1']]),
  }),
  ready: true,
});

t.test('nodes, policies with their reason, traffic, SNAT ports, failovers', async (t) => {
  const text = formatStatus({
    ...base(),
    history: [
      {
        at: '2026-11-22T20:00:00.000Z',
        ip: '192.168.1.100',
        from: 'worker2',
        to: 'worker1',
        reason: 'assigned',
        cause: 'owner-down',
        outageMs: 42,
      },
    ],
    traffic: {
      egressIPs: {
        '192.168.1.100': {
          packets: 7,
          bytes: 700,
          connections: 3,
          noGatewayDropped: 1,
          relayDropped: { source: 2, destination: 0 },
        },
      },
      policies: { egress: { packets: 5, bytes: 500 } },
    },
    snatPorts: {
      '192.168.1.100': {
        connections: 60000,
        busiest: { destination: '8.8.8.8:53/udp', ports: 60000, usage: 60000 / 64512 },
        warning: '192.168.1.100 uses 60000 of 64512 source ports toward 8.8.8.8:53/udp (93 %): ...',
      },
    },
  });
  t.match(text, /^node worker1: taking part\n/);
  t.match(text, /\nworker1 \(this node\)\s+Up\s+192\.168\.1\.100\s+-\n/, 'nodes');
  t.match(text, /\negress\s+Active\s+192\.168\.1\.100\s+worker1\s+192\.168\.1\.100 is held by worker1\n/, 'policies');
  t.match(text, /\n192\.168\.1\.100\s+worker1\s+7\s+700\s+3\s+1\s+2\s+0\n/, 'per floating IP');
  t.match(text, /\negress\s+5\s+500\n/, 'per policy');
  t.match(text, /\n192\.168\.1\.100\s+60000\s+8\.8\.8\.8:53\/udp\s+60000\s+93\.0 %\n/, 'SNAT ports');
  t.match(text, /\nwarning: 192\.168\.1\.100 uses 60000 of 64512/, 'and the warning');
  t.match(text, /\n2026-11-22T20:00:00\.000Z\s+192\.168\.1\.100\s+worker2\s+worker1\s+owner-down\s+assigned\s+42 ms\n/);
});

t.test('counters or conntrack that cannot be read, no failovers', async (t) => {
  const text = formatStatus({ ...base(), history: [], traffic: null, snatPorts: null });
  t.match(text, /\nCounters: cannot be read \(see the log\)\n/);
  t.match(text, /\nSNAT ports: the conntrack table cannot be read \(see the log\)\n/);
  t.match(text, /Failovers [^\n]*\n\(none\)\n/);
});

t.test('connection sync: peers, connections per IP, totals; or off', async (t) => {
  const text = formatStatus({ ...base(), connectionSync: syncStats });
  t.match(text, /\nConnection sync \(UDP port 7608\)\n/);
  t.match(text, /\nworker2\s+yes\s+80 ms ago\n/, 'a peer in sync');
  t.match(text, /\ncp1\s+no\s+-\n/, 'a peer never heard');
  t.match(text, /\n192\.168\.1\.100\s+345\s+owner: sending\n/);
  t.match(text, /\n192\.168\.1\.101\s+1200\s+candidate: cached\n/);
  t.match(text, /installed 26, clashed 3, failed 0; lag 42 ms; errors: send 0, events lost 1; rejected 3\n/);
  t.match(formatStatus({ ...base(), connectionSync: null }), /\nConnection sync: off\n/);
});
