import { randomInt } from 'node:crypto';
import { runChaos } from './chaos.js';
import { reportMarkdown, violationCount } from './chaos-report.js';

// `make chaos [MINUTES=10] [SEED=n]`: the chaos soak; exits 1 on any violation.

async function main(): Promise<void> {
  const minutes = Number(process.env.MINUTES || 10);
  const seed = process.env.SEED ? Number(process.env.SEED) : randomInt(2 ** 31);
  if (!(minutes > 0) || !Number.isInteger(seed))
    throw new Error(`bad MINUTES=${process.env.MINUTES} or SEED=${process.env.SEED}`);
  process.stdout.write(`chaos: seed ${seed} (SEED=${seed} repeats it), ${minutes} min\n`);
  const report = await runChaos({ minutes, seed, progress: (l) => process.stdout.write(`chaos: ${l}\n`) });
  process.stdout.write(`\n${reportMarkdown(report)}`);
  process.exitCode = violationCount(report) ? 1 : 0;
}

main().catch((e) => {
  process.stderr.write(`chaos failed: ${(e as Error).stack ?? e}\n`);
  process.exit(2);
});
