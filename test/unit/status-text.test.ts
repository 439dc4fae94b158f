import t from 'tap';
import { formatStatus, type StatusReply } from '../../src/daemon/status-text.js';
import { status } from '../../src/daemon/status.js';
import { loadValid } from '../helpers.js';

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
