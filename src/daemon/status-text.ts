import type { FailoverRecord } from './history.js';
import type { Status } from './status.js';

// `status -o text`: the daemon's answer as a few tables a person reads at a glance
// (yaml and json carry the same and more, for tools).

/** What the daemon's `status` command answers. */
export type StatusReply = Status & {
  readonly ready: boolean;
  readonly history?: readonly FailoverRecord[];
};

/** Left-aligned columns, two spaces apart; the last column is not padded. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '))
    .join('\n');
}

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
    ['TIME', 'IP', 'FROM', 'TO', 'CAUSE', 'OUTAGE'],
    ...(s.history ?? []).map((h) => [
      h.at,
      h.ip,
      h.from ?? '-',
      h.to ?? '-',
      h.cause,
      h.outageMs === null ? '-' : `${h.outageMs} ms`,
    ]),
  ];
  return [
    `node ${s.node}: ${s.ready ? 'taking part' : 'listening before taking part'}\n`,
    section('Nodes', nodes),
    section('Policies', policies),
    section('Failovers (oldest first; outage: owner seen Down -> gratuitous ARP, on the node that took over)', history),
  ].join('\n');
}
