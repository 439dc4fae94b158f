import t from 'tap';
import { egressList, formatTable, status, type NodeStatus } from '../../src/daemon/status.js';
import { loadValid } from '../helpers.js';

const up = (holds: string[] = []): NodeStatus => ({ state: 'Up', eligible: true, draining: false, carrier: true, digest: 'd', holds });

t.test('status mirrors the NetworkGatewayGroup status of DESIGN.md §3', async (t) => {
  const config = loadValid();
  const s = status(config, {
    self: 'worker1',
    nodes: new Map([['worker1', up()], ['worker2', up(['192.168.1.100'])]]),
    owners: new Map([['192.168.1.100', 'worker2']]),
  });
  t.same(s.nodes, { worker1: 'Up', worker2: 'Up', cp1: 'Down' }, 'a node never heard from is Down');
  t.same(s.floatingIPs, { '192.168.1.100': 'worker2', '192.168.1.101': null });
  t.same(s.policies, { egress: { egressIP: '192.168.1.100', gateway: 'worker2', state: 'Active' } });
  t.same(s.configDigests, { worker1: 'd', worker2: 'd', cp1: null });
  const none = status(config, { self: 'worker1', nodes: new Map([['worker1', up()]]), owners: new Map() });
  t.same(none.policies['egress'], { egressIP: '192.168.1.100', gateway: null, state: 'NoGateway' });
});

t.test('egress list: one row per source and destination, as this node steers it', async (t) => {
  const config = loadValid();
  const rows = egressList(config, { self: 'worker1', nodes: new Map(), owners: new Map([['192.168.1.100', 'worker2']]) });
  t.same(rows.map((r) => [r.source, r.destination, r.egressIP, r.gateway]), [
    ['10.10.1.0/24', '8.8.8.0/24', '192.168.1.100', 'worker2'],
    ['10.10.1.0/24', '!8.8.8.8/32', '192.168.1.100', 'worker2'],
    ['cgroup:system.slice/shop.service', '8.8.8.0/24', '192.168.1.100', 'worker2'],
    ['cgroup:system.slice/shop.service', '!8.8.8.8/32', '192.168.1.100', 'worker2'],
    ['10.20.0.0/16', '8.8.8.0/24', '192.168.1.100', 'worker2'],
    ['10.20.0.0/16', '!8.8.8.8/32', '192.168.1.100', 'worker2'],
  ]);
  const text = formatTable(rows);
  t.match(text.split('\n')[0], /^Source\s+Destination CIDR\s+Egress IP\s+Gateway node$/);
});
