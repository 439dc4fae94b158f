import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLUSTER_CONTAINERS, CLUSTER_FIPS, CLUSTER_HOSTS, clusterConfig, settled } from '../lab/cluster.js';
import { ECHO, Lab } from '../lab/lab.js';
import { NO_TEST_RUNNER_HOOKS } from '../lab/paths.js';

// What a Prometheus scrape and a `status` cost on the owner of a floating IP that carries
// ENTRIES connections: the scrape reads nft's named counters (one netlink dump) and the
// last port-pressure check; `status` dumps the IP's connections from conntrack (filtered
// in the kernel). Heartbeats must not notice either.

const ENTRIES = 100_000;
const SCRAPES = 15;
const STATUS_CALLS = 5;

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const max = (xs: readonly number[]) => Math.max(...xs);

/** SCRAPES scrapes of the metrics endpoint from the owner itself, timed inside one Node process (ms each). */
async function scrapes(lab: Lab, host: string): Promise<number[]> {
  const script = `(async () => { const r = []; for (let i = 0; i < ${SCRAPES}; i++) { const t = performance.now(); await (await fetch('http://127.0.0.1:9607/metrics')).text(); r.push(performance.now() - t); } console.log(JSON.stringify(r)); })()`;
  const r = await lab.sh(host, `${NO_TEST_RUNNER_HOOKS} node -e ${JSON.stringify(script)}`);
  return JSON.parse(r.stdout) as number[];
}

/** STATUS_CALLS runs of `egress-natd status` (wall time of the command, Node's start-up included). */
async function statusCalls(lab: Lab, host: string): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < STATUS_CALLS; i++) {
    const t = process.hrtime.bigint();
    await lab.egress(host, ['status', '-o', 'json']);
    out.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return out;
}

const downLines = (lab: Lab) =>
  lab.hosts.reduce((n, h) => n + (readFileSync(lab.daemonLog(h.name), 'utf8').match(/ is Down: /g)?.length ?? 0), 0);

export async function scrapeSection(): Promise<string> {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  try {
    const cfg = join(lab.dir, 'config.yaml');
    writeFileSync(cfg, clusterConfig(lab));
    const names = lab.hosts.map((h) => h.name);
    await Promise.all(names.map((h) => lab.startDaemon(h, cfg)));
    const owner = (await settled(lab, names, 30_000)).floatingIPs[CLUSTER_FIPS.shop]!;
    // The entries must outlive the measurement (UDP's default is 30 s unreplied).
    await lab.sh(owner, 'sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600');
    const idleScrape = await scrapes(lab, owner);
    const idleStatus = await statusCalls(lab, owner);
    // c1 (its policy's IP is the shop IP) sends one datagram to each of ENTRIES (address, port) pairs: one connection each on the owner.
    const perAddress = ENTRIES / 2;
    await lab.sh(
      'c1',
      `python3 -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x', (d, p)) for d in ('${ECHO.inPolicy}', '203.0.113.12') for p in range(1024, ${1024 + perAddress})]"`,
    );
    const downBefore = downLines(lab);
    const loadedStatus = await statusCalls(lab, owner);
    const status = await lab.status(owner);
    const tracked = status.snatPorts?.[CLUSTER_FIPS.shop]?.connections ?? 0;
    const loadedScrape = await scrapes(lab, owner);
    const downs = downLines(lab) - downBefore;
    const row = (what: string, xs: number[], note = '') =>
      `| ${what} | ${median(xs).toFixed(1)} | ${max(xs).toFixed(1)} | ${note} |`;
    return `## Scrape cost: the owner of a floating IP with ${tracked.toLocaleString('en')} tracked connections

The owner of ${CLUSTER_FIPS.shop} in the 4-host cluster lab; c1 sent one UDP datagram to each of ${ENTRIES.toLocaleString('en')}
(address, port) pairs of its policy's destinations, each a connection SNATed on the owner (its status counted
${tracked.toLocaleString('en')}). A scrape is \`GET /metrics\` from the owner itself (${SCRAPES} in one Node process, ms each); \`status\`
is the command's wall time (Node's start-up included: it asks the daemon, which dumps the IP's connections from conntrack,
filtered in the kernel). Nodes marked Down by any daemon while the ${tracked.toLocaleString('en')} connections were
counted and scraped: **${downs}**.

| call | median ms | max ms | note |
|---|---:|---:|---|
${row('scrape, idle', idleScrape)}
${row(`scrape, ${tracked.toLocaleString('en')} connections`, loadedScrape, `target ≤ 50 ms ${median(loadedScrape) <= 50 ? '✓' : '✗'}`)}
${row('`status`, idle', idleStatus)}
${row(`\`status\`, ${tracked.toLocaleString('en')} connections`, loadedStatus)}
`;
  } finally {
    await lab.destroy();
  }
}
