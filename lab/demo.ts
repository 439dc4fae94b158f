import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLUSTER_CONTAINERS, CLUSTER_FIPS, CLUSTER_HOSTS, clusterConfig, settled } from './cluster.js';
import { ECHO, Lab, type DaemonStatus } from './lab.js';
import { cutOff, outage, startProber, waitForFlow } from './traffic.js';

// `sudo make demo`: the cluster lab with real daemons. Four hosts on a bridge, a router
// with an echo server, two containers. Shows which egress IP the echo server sees from
// each workload and `status`, cuts the owner of an IP off the segment, and measures how
// long traffic took to come back with the same IP. Cleans up on any exit.

const rows: [string, string, string][] = [
  ['c1 (container on h3), policy shop', 'c1', ECHO.inPolicy],
  ['c1 to an excluded destination', 'c1', ECHO.excluded],
  ['c1 to another service, policy reports', 'c1', ECHO.other],
  ['c2 (container on h4), policy batch', 'c2', ECHO.inPolicy],
];

const expected = (s: DaemonStatus, from: string, dest: string): string => {
  if (dest === ECHO.excluded) return 'its own address (excluded)';
  const policy = from === 'c2' ? 'batch' : dest === ECHO.other ? 'reports' : 'shop';
  const p = s.policies[policy]!;
  return `${p.egressIP} via ${p.gateway ?? '(none)'}`;
};

async function table(lab: Lab, s: DaemonStatus, title: string): Promise<void> {
  console.log(`\n${title}`);
  console.log(`  ${'workload'.padEnd(40)} ${'destination'.padEnd(15)} ${'echo server sees'.padEnd(17)} policy says`);
  for (const [label, from, dest] of rows) {
    const seen = await lab.probe(from, dest);
    console.log(
      `  ${label.padEnd(40)} ${dest.padEnd(15)} ${(seen ?? '(nothing)').padEnd(17)} ${expected(s, from, dest)}`,
    );
  }
}

async function showStatus(lab: Lab, host: string): Promise<void> {
  console.log(`\n$ egress-natd status   (on ${host})`);
  const out = (await lab.egress(host, ['status'])).stdout;
  // Counters, traffic, SNAT ports, the failover history and per-node details are in
  // `status -o json`; the demo shows the summary.
  const summary = out.split('\n').filter((l, i, all) => {
    const section =
      all
        .slice(0, i + 1)
        .reverse()
        .find((x) => /^\S/.test(x)) ?? '';
    const more = /^(details|counters|history|traffic|snatPorts):/;
    return !more.test(section) && !more.test(l);
  });
  console.log(
    summary
      .map((l) => `  ${l}`)
      .join('\n')
      .trimEnd(),
  );
}

async function main(): Promise<void> {
  const started = Date.now();
  console.log('egress-natd demo: 4 hosts running the daemon, a router with an echo server, 2 containers');
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  const stop = () => void lab.destroy().then(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const cfg = join(lab.dir, 'config.yaml');
    writeFileSync(cfg, clusterConfig(lab));
    const names = lab.hosts.map((h) => h.name);
    await Promise.all(names.map((h) => lab.startDaemon(h, cfg)));
    console.log(`daemons started on ${names.join(', ')}; they listen 2 s, then elect owners`);
    let s = await settled(lab, names);
    await table(lab, s, 'egress IPs as the echo server sees them:');
    await showStatus(lab, 'h4');

    const ip = CLUSTER_FIPS.shop;
    const victim = s.floatingIPs[ip]!;
    console.log(`\ncutting ${victim}, the owner of ${ip}, off the segment (switch port down, daemon killed with -9),`);
    console.log(`while c1 sends a request every 2 ms...`);
    const probe = await startProber(lab, 'c1', ECHO.inPolicy, 2);
    await waitForFlow(probe.log, ip);
    const cut = await cutOff(lab, victim);
    await waitForFlow(probe.log, ip, 5000);
    await sleep(400);
    const o = outage(await probe.stop(), cut, ip);
    const others = names.filter((n) => n !== victim);
    s = await settled(lab, others);
    console.log(
      `traffic came back with the same source IP ${ip} ${o.recoveredMs?.toFixed(0)} ms after the cut; new owner ${s.floatingIPs[ip]}`,
    );
    console.log(`  (${o.lost} of ${o.sent} requests lost; the echo server saw only ${o.ips.join(', ')})`);
    await table(lab, s, `after the failover (${victim} is Down):`);
    await showStatus(lab, 'h4');

    for (const h of others) await lab.stopDaemon(h, 'SIGTERM');
    await lab.stopPost(victim, cfg);
    console.log(
      '\ndaemons stopped (SIGTERM: hand over, keep steering); the killed host parked by `egress-natd release --keep-steering`',
    );
  } finally {
    await lab.destroy();
  }
  console.log(`lab removed; demo took ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().catch((e) => {
  console.error(`demo failed: ${(e as Error).message}`);
  process.exit(1);
});
