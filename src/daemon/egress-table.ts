import type { EgressRow } from './status.js';
import { table } from './table.js';

// `egress list` as a table: kept apart from status.ts, so that the CLI loads no planning
// code to print it.

export function formatTable(rows: readonly EgressRow[]): string {
  const header = ['Source', 'Destination CIDR', 'Egress IP', 'Gateway node', 'Policy', 'Packets', 'Bytes'];
  const cells = rows.map((r) => [
    r.source,
    r.destination,
    r.egressIP,
    r.gateway,
    r.policy,
    r.packets === undefined ? '-' : String(r.packets),
    r.bytes === undefined ? '-' : String(r.bytes),
  ]);
  return `${table([header, ...cells])}\n`;
}
