import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { labConfig } from './config.js';
import { ECHO, FIPS, Lab } from './lab.js';

// `sudo make demo`: the lab with static owners. Shows what the echo server sees from
// each workload, moves a floating IP to another host, and cleans up.

const rows: [string, string, string][] = [
  ['c1 (container on h1, policy shop)', 'c1', ECHO.inPolicy],
  ['c1 to an excluded destination', 'c1', ECHO.excluded],
  ['c1 to another destination', 'c1', ECHO.other],
  ['c2 (container on h3, policy batch)', 'c2', ECHO.inPolicy],
  ['h1 process in cgroup (policy shop)', 'h1', ECHO.inPolicy],
  ['h1 process outside the cgroup', 'h1', ECHO.inPolicy],
];

async function table(lab: Lab, title: string): Promise<void> {
  console.log(`\n${title}`);
  console.log(`  ${'workload'.padEnd(38)} ${'destination'.padEnd(15)} echo server sees`);
  for (const [label, from, dest] of rows) {
    const seen = await lab.probe(from, dest, { cgroup: label.includes('in cgroup') });
    console.log(`  ${label.padEnd(38)} ${dest.padEnd(15)} ${seen ?? '(nothing)'}`);
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  console.log('egress-natd demo: 3 hosts, a router with an echo server, 2 containers, 1 cgroup workload');
  const lab = await Lab.create();
  const stop = () => void lab.destroy().then(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const cfg = join(lab.dir, 'config.yaml');
    writeFileSync(cfg, labConfig(lab));
    await lab.makeCgroup('h1');
    await lab.applyAll(cfg, { [FIPS[0]]: 'h2', [FIPS[1]]: 'h2' });
    await table(lab, `static owners: ${FIPS[0]} -> h2, ${FIPS[1]} -> h2`);

    console.log(`\nmoving ${FIPS[0]} from h2 to h3 (static mode: apply on every host)...`);
    const t0 = Date.now();
    await lab.applyAll(cfg, { [FIPS[0]]: 'h3', [FIPS[1]]: 'h2' });
    let seen: string | undefined;
    while ((seen = await lab.probe('c1', ECHO.inPolicy, { timeoutS: 1 })) !== FIPS[0] && Date.now() - t0 < 10_000);
    console.log(`c1 sees ${seen} again ${Date.now() - t0} ms after the move began`);
    await table(lab, `after the move: ${FIPS[0]} -> h3, ${FIPS[1]} -> h2`);
    for (const h of lab.hosts) await lab.egress(h.name, ['release']);
    console.log('\nreleased on every host');
  } finally {
    await lab.destroy();
  }
  console.log(`lab removed; demo took ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().catch((e) => {
  console.error(`demo failed: ${(e as Error).message}`);
  process.exit(1);
});
