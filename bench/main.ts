import { writeFileSync } from 'node:fs';
import { cpus, hostname, release as kernelRelease } from 'node:os';
import { chaosSection } from './chaos.js';
import { failoverSection, resources } from './cluster.js';
import { fastSection } from './fast.js';
import { keepalivedSection } from './keepalived.js';
import { planApply } from './plan-apply.js';
import { scrapeSection } from './scrape.js';
import { syncSection } from './sync.js';
import { throughputSection } from './throughput.js';

// `make bench`: every benchmark in one run on one machine, written to BENCHMARKS.md.

async function main(): Promise<void> {
  const only = process.argv[2];
  const sections: string[] = [];
  // plan + apply first: deleting the labs' namespaces leaves the kernel busy for a while
  // (netns teardown holds the global rtnl lock), which slowed apply twofold when it came last.
  if (!only || only === 'plan') sections.push(await planApply());
  if (!only || only === 'failover') sections.push(await failoverSection());
  if (!only || only === 'keepalived') sections.push(await keepalivedSection());
  if (!only || only === 'fast') sections.push(await fastSection());
  if (!only || only === 'resources') sections.push(await resources());
  if (!only || only === 'throughput') sections.push(await throughputSection());
  if (!only || only === 'scrape') sections.push(await scrapeSection());
  if (!only || only === 'sync') sections.push(await syncSection());
  if (!only || only === 'chaos') sections.push(await chaosSection());
  const date = new Date().toISOString().slice(0, 10);
  const text = `# Benchmarks

Written by \`make bench\` on ${date}.

Machine: ${hostname()}, ${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}, Linux ${kernelRelease()}, Node ${process.version}.
Shared and noisy: every figure below comes from this one run; medians and percentiles, not best cases.

${sections.join('\n')}`;
  if (only) process.stdout.write(text);
  else {
    writeFileSync('BENCHMARKS.md', text);
    process.stdout.write(text);
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
