import { randomInt } from 'node:crypto';
import { runChaos } from '../lab/chaos.js';
import { reportMarkdown } from '../lab/chaos-report.js';

// The chaos soak's figures in BENCHMARKS.md: the same run as `make chaos`, shorter
// (CHAOS_MINUTES, default 5), reported as it is, violations included.

export async function chaosSection(): Promise<string> {
  const minutes = Number(process.env.CHAOS_MINUTES || 5);
  const seed = process.env.SEED ? Number(process.env.SEED) : randomInt(2 ** 31);
  const report = await runChaos({ minutes, seed, progress: (l) => process.stderr.write(`chaos: ${l}\n`) });
  return `## Chaos soak: ${minutes} min of random faults (\`make chaos\`)

The cluster lab (4 hosts, 100 ms heartbeats) under random faults (kill -9, SIGTERM, switch port down, one-way
heartbeat loss, partitions, good and bad reloads, drain), each healed, while c1 and c2 probe the echo server;
the invariants of docs/design.md ("The chaos soak") are checked all the time. lab/chaos.ts.

${reportMarkdown(report)}`;
}
