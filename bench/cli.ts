import type { Lab } from '../lab/lab.js';
import { BIN } from '../lab/paths.js';

// The command line against the runtime's floor: each command and `node -e 0` run in
// turn, in the same namespace and the same way (a shell in the lab host), so both pay the
// same spawn and namespace costs and the same machine noise; the ratio is per pair.

const PAIRS = 11;

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function wall(lab: Lab, host: string, command: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  await lab.sh(host, command);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** A markdown table: each command's median wall time, the floor's, and the median of the per-pair ratios. */
export async function cliTable(lab: Lab, host: string): Promise<string> {
  const floor = 'unset NODE_OPTIONS; node -e 0';
  const commands: [string, string][] = [
    ['--version', '--version'],
    ['status', 'status'],
    ['egress list', 'egress list'],
    ['drain', 'drain'],
    ['undrain', 'undrain'],
  ];
  const rows: string[] = [];
  for (const [name, args] of commands) {
    const own: number[] = [];
    const base: number[] = [];
    const ratios: number[] = [];
    for (let i = 0; i < PAIRS; i++) {
      const b = await wall(lab, host, floor);
      const c = await wall(lab, host, `unset NODE_OPTIONS; ${lab.stateEnv(host)} ${BIN} ${args} >/dev/null`);
      base.push(b);
      own.push(c);
      ratios.push(c / b);
    }
    const r = median(ratios);
    rows.push(
      `| \`egress-natd ${name}\` | ${median(own).toFixed(0)} | ${median(base).toFixed(0)} | ${r.toFixed(2)} | ≤ 1.6 ${r <= 1.6 ? '✓' : '✗'} |`,
    );
  }
  return [
    `Each command and \`node -e 0\` alternately, ${PAIRS} pairs, in the daemon's host (the daemon answering \`status\`,`,
    '`egress list`, `drain`, `undrain` over its control socket); wall time including the shell that starts them.',
    '',
    '| command | median ms | `node -e 0` median ms | ratio (median of pairs) | target |',
    '|---|---:|---:|---:|---|',
    ...rows,
    '',
    "`status` costs more than the others: it waits for the daemon's conntrack dump (SNAT port pressure), which",
    "walks the kernel's whole conntrack hash however few entries match (262,144 buckets here: 10 ms for an",
    'empty table, measured apart): one walk for all the IPs the daemon holds, the kernel passing only',
    'source-NATed entries. Its YAML is written without a YAML library, whose loading cost more than the answer.',
  ].join('\n');
}
