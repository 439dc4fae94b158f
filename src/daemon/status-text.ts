import type { FailoverRecord } from './history.js';
import type { Status } from './status.js';
import { table } from './table.js';
import type { SyncStats } from './connection-sync.js';
import type { PortPressure } from './snat-ports.js';
import type { Traffic } from './traffic.js';

// `status -o text`: the daemon's answer as a few tables a person reads at a glance
// (yaml and json carry the same and more, for tools).

/** What the daemon's `status` command answers. */
export type StatusReply = Status & {
  readonly ready: boolean;
  readonly history?: readonly FailoverRecord[];
  readonly traffic?: Traffic | null;
  readonly snatPorts?: Readonly<Record<string, PortPressure>> | null;
  readonly connectionSync?: SyncStats | null;
};

const section = (title: string, rows: readonly (readonly string[])[]): string =>
  `${title}\n${rows.length > 1 ? table(rows) : '(none)'}\n`;

export function formatStatus(s: StatusReply): string {
  const nodes = [
    ['NODE', 'STATE', 'HOLDS', 'CONFIG'],
    ...Object.entries(s.nodes).map(([name, state]) => [
      name + (name === s.node ? ' (this node)' : ''),
      state + (s.details[name]?.draining ? ', draining' : ''),
      s.details[name]?.holds.join(', ') || '-',
      (s.configDigests[name] ?? '-').slice(0, 12),
    ]),
  ];
  const policies = [
    ['POLICY', 'STATE', 'EGRESS IP', 'GATEWAY', 'REASON'],
    ...Object.entries(s.policies).map(([name, p]) => [name, p.state, p.egressIP, p.gateway ?? '-', p.reason]),
  ];
  const history = [
    ['TIME', 'IP', 'FROM', 'TO', 'CAUSE', 'REASON', 'OUTAGE'],
    ...(s.history ?? []).map((h) => [
      h.at,
      h.ip,
      h.from ?? '-',
      h.to ?? '-',
      h.cause,
      h.reason,
      h.outageMs === null ? '-' : `${h.outageMs} ms`,
    ]),
  ];
  const ips = Object.entries(s.traffic?.egressIPs ?? {});
  const egressIPs = [
    [
      'EGRESS IP',
      'OWNER',
      'PACKETS',
      'BYTES',
      'CONNECTIONS',
      'DROPPED: NO GATEWAY',
      'RELAY SOURCE',
      'RELAY DESTINATION',
    ],
    ...ips.map(([ip, c]) => [
      ip,
      s.floatingIPs[ip] ?? '-',
      String(c.packets),
      String(c.bytes),
      String(c.connections),
      String(c.noGatewayDropped),
      String(c.relayDropped.source),
      String(c.relayDropped.destination),
    ]),
  ];
  const sent = [
    ['POLICY', 'PACKETS', 'BYTES'],
    ...Object.entries(s.traffic?.policies ?? {}).map(([name, c]) => [name, String(c.packets), String(c.bytes)]),
  ];
  const counted = s.traffic
    ? [
        section('Egress IPs (left this node with the IP; drops on this node)', egressIPs),
        section("Policies (sent by this node's own sources)", sent),
      ]
    : ['Counters: cannot be read (see the log)\n'];
  const ports = [
    ['HELD IP', 'CONNECTIONS', 'BUSIEST DESTINATION', 'PORTS USED', 'OF THE RANGE'],
    ...Object.entries(s.snatPorts ?? {}).map(([ip, p]) => [
      ip,
      String(p.connections),
      p.busiest?.destination ?? '-',
      p.busiest ? String(p.busiest.ports) : '-',
      p.busiest ? `${(p.busiest.usage * 100).toFixed(1)} %` : '-',
    ]),
  ];
  const warnings = Object.values(s.snatPorts ?? {}).flatMap((p) => (p.warning ? [`warning: ${p.warning}\n`] : []));
  const snat =
    s.snatPorts === null
      ? ['SNAT ports: the conntrack table cannot be read (see the log)\n']
      : [section('SNAT ports (floating IPs this node holds)', ports), ...warnings];
  return [
    `node ${s.node}: ${s.ready ? 'taking part' : 'listening before taking part'}\n`,
    section('Nodes', nodes),
    section('Policies', policies),
    ...counted,
    ...snat,
    ...syncSection(s.connectionSync),
    section('Failovers (oldest first; outage: owner seen Down -> gratuitous ARP, on the node that took over)', history),
  ].join('\n');
}

/** Connection sync: per peer, whether a complete sweep went either way lately; per IP, what this node has. */
function syncSection(c: SyncStats | null | undefined): string[] {
  if (!c) return ['Connection sync: off\n'];
  const peers = [
    ['PEER', 'IN SYNC', 'LAST HEARD'],
    ...Object.entries(c.peers).map(([name, p]) => [
      name,
      p.inSync ? 'yes' : 'no',
      p.lastHeardMsAgo === null ? '-' : `${p.lastHeardMsAgo} ms ago`,
    ]),
  ];
  const entries = [
    ['IP', 'CONNECTIONS', 'ROLE'],
    ...Object.entries(c.sending).map(([ip, n]) => [ip, String(n), 'owner: sending']),
    ...Object.entries(c.cached).map(([ip, n]) => [ip, String(n), 'candidate: cached']),
  ];
  const totals = `installed ${c.installed}, clashed ${c.existing}, failed ${c.installFailed}; lag ${Math.round(c.lagMs)} ms; errors: send ${c.sendErrors}, events lost ${c.eventsLost}; rejected ${Object.values(c.dropped).reduce((a, b) => a + b, 0)}\n`;
  return [section(`Connection sync (UDP port ${c.port})`, peers), section('Synced connections', entries), totals];
}
