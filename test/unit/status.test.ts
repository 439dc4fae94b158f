import t from 'tap';
import { formatTable } from '../../src/daemon/egress-table.js';
import { configDrift, egressList, status, statusLine, type NodeStatus } from '../../src/daemon/status.js';
import { loadValid } from '../helpers.js';

const up = (holds: string[] = []): NodeStatus => ({
  state: 'Up',
  eligible: true,
  draining: false,
  carrier: true,
  digest: 'd',
  holds,
});

t.test("status: nodes Up or Down, the owner of each floating IP, each policy's gateway node and state", async (t) => {
  const config = loadValid();
  const s = status(config, {
    self: 'worker1',
    nodes: new Map([
      ['worker1', up()],
      ['worker2', up(['192.168.1.100'])],
    ]),
    owners: new Map([['192.168.1.100', 'worker2']]),
  });
  t.same(s.nodes, { worker1: 'Up', worker2: 'Up', cp1: 'Down' }, 'a node never heard from is Down');
  t.same(s.floatingIPs, { '192.168.1.100': 'worker2', '192.168.1.101': null });
  t.same(s.policies, {
    egress: {
      egressIP: '192.168.1.100',
      gateway: 'worker2',
      state: 'Active',
      reason: '192.168.1.100 is held by worker2',
    },
  });
  t.same(s.configDigests, { worker1: 'd', worker2: 'd', cp1: null });
  const none = status(config, { self: 'worker1', nodes: new Map([['worker1', up()]]), owners: new Map() });
  t.same(none.policies['egress'], {
    egressIP: '192.168.1.100',
    gateway: null,
    state: 'NoGateway',
    reason: '192.168.1.100 has no owner yet; its traffic is dropped (noGateway)',
  });
});

t.test('egress list: one row per source and destination, as this node steers it', async (t) => {
  const config = loadValid();
  const rows = egressList(config, {
    self: 'worker1',
    nodes: new Map(),
    owners: new Map([['192.168.1.100', 'worker2']]),
  });
  t.same(
    rows.map((r) => [r.source, r.destination, r.egressIP, r.gateway]),
    [
      ['10.10.1.0/24', '8.8.8.0/24', '192.168.1.100', 'worker2'],
      ['10.10.1.0/24', '!8.8.8.8/32', '192.168.1.100', 'worker2'],
      ['cgroup:system.slice/shop.service', '8.8.8.0/24', '192.168.1.100', 'worker2'],
      ['cgroup:system.slice/shop.service', '!8.8.8.8/32', '192.168.1.100', 'worker2'],
      ['10.20.0.0/16', '8.8.8.0/24', '192.168.1.100', 'worker2'],
      ['10.20.0.0/16', '!8.8.8.8/32', '192.168.1.100', 'worker2'],
    ],
  );
  t.ok(
    rows.every((r) => r.policy === 'egress' && r.packets === undefined),
    'each row names its policy; no counts without counters',
  );
  const text = formatTable(rows);
  t.match(text.split('\n')[0], /^Source\s+Destination CIDR\s+Egress IP\s+Gateway node\s+Policy\s+Packets\s+Bytes$/);
  t.match(text.split('\n')[1], /^10\.10\.1\.0\/24\s+8\.8\.8\.0\/24\s+192\.168\.1\.100\s+worker2\s+egress\s+-\s+-$/);
  const counted = egressList(
    config,
    { self: 'worker1', nodes: new Map(), owners: new Map() },
    { egressIPs: {}, policies: { egress: { packets: 12, bytes: 3400 } } },
  );
  t.same([counted[0]!.gateway, counted[0]!.packets, counted[0]!.bytes], ['(none)', 12, 3400], "the policy's counts");
  t.match(formatTable(counted).split('\n')[1], /\s+egress\s+12\s+3400$/);
});

t.test('STATUS= line: what this node does, nodes up, and drift', async (t) => {
  const config = loadValid();
  const view = (self: NodeStatus, others: [string, NodeStatus][] = []) => ({
    self: 'worker1',
    nodes: new Map([['worker1', self], ...others]),
    owners: new Map<string, string>(),
  });
  const running = { ready: true, draining: false, carrier: true };
  t.equal(
    statusLine(config, view(up(['192.168.1.100', '192.168.1.101']), [['worker2', up()]]), running),
    'owner of 192.168.1.100, 192.168.1.101; 2/3 nodes up',
  );
  t.equal(
    statusLine(
      config,
      view(up(), [
        ['worker2', up()],
        ['cp1', up()],
      ]),
      running,
    ),
    'standby, owns no floating IP; 3/3 nodes up',
  );
  t.equal(statusLine(config, view(up()), { ...running, ready: false }), 'listening before taking part; 1/3 nodes up');
  t.equal(statusLine(config, view(up()), { ...running, carrier: false }), 'no carrier, owns nothing; 1/3 nodes up');
  t.equal(
    statusLine(config, view(up(['192.168.1.100'])), { ...running, draining: true }),
    'owner of 192.168.1.100 (draining); 1/3 nodes up',
  );
  const other = { ...up(), digest: 'e' };
  t.equal(
    statusLine(
      config,
      view(up(), [
        ['worker2', other],
        ['cp1', other],
      ]),
      running,
    ),
    'standby, owns no floating IP; 3/3 nodes up; config differs on cp1, worker2',
  );
});

t.test('config drift: Up nodes whose digest is not ours; Down nodes do not count', async (t) => {
  const v = (nodes: [string, NodeStatus][]) => ({
    self: 'worker1',
    nodes: new Map<string, NodeStatus>([['worker1', up()], ...nodes]),
    owners: new Map<string, string>(),
  });
  t.same(configDrift(v([['worker2', up()]])), []);
  t.same(configDrift(v([['worker2', { ...up(), digest: 'e' }]])), [{ node: 'worker2', digest: 'e' }]);
  t.same(configDrift(v([['worker2', { ...up(), state: 'Down', digest: 'e' }]])), [], 'a Down node may run anything');
});

t.test('peers that fail authentication: in status, and in the STATUS= line', async (t) => {
  const config = loadValid();
  const failing: NodeStatus = {
    state: 'Down',
    eligible: false,
    draining: false,
    carrier: false,
    holds: [],
    authFailing: true,
  };
  const view = (others: [string, NodeStatus][]) => ({
    self: 'worker1',
    nodes: new Map([['worker1', up(['192.168.1.100'])], ...others]),
    owners: new Map<string, string>(),
  });
  const running = { ready: true, draining: false, carrier: true };
  const majority = view([
    ['worker2', up()],
    ['cp1', failing],
  ]);
  t.equal(
    statusLine(config, majority, running),
    'owner of 192.168.1.100; 2/3 nodes up; authentication fails for cp1 (another cluster key?)',
    'in the majority: it carries on, and says so',
  );
  t.same(status(config, majority).authentication, { failing: ['cp1'], outvoted: false });
  t.equal(status(config, majority).details['cp1']!.authFailing, true);
  const alone = view([
    ['worker2', failing],
    ['cp1', failing],
  ]);
  t.equal(
    statusLine(config, alone, running),
    'owner of 192.168.1.100; 1/3 nodes up; authentication fails for cp1, worker2 (another cluster key?); taking no IP: more peers fail authentication than pass (is the key here wrong?)',
    'outvoted: it takes nothing new',
  );
  t.same(status(config, alone).authentication, { failing: ['cp1', 'worker2'], outvoted: true });
  const tie = view([['worker2', failing]]);
  t.ok(
    status(config, tie).authentication.outvoted,
    'a tie (two nodes) is outvoted too: nobody can tell whose key is wrong',
  );
});
