import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CLUSTER_CONTAINERS,
  CLUSTER_FIPS,
  CLUSTER_HOSTS,
  clusterConfig,
  settled,
  waitUntil,
} from '../../lab/cluster.js';
import { Lab, run } from '../../lab/lab.js';
import { NODE } from '../../lab/paths.js';
import { cutOff } from '../../lab/traffic.js';

// After a failover the new owner installs the synced connections after it announced the
// IPs, in the background (src/dataplane/reconcile.ts, stateFirst). Each reconcile ends by
// dropping the sync cache of the IPs the node now holds: an install that read the cache
// only when its turn came found the second IP's entries gone. It takes them at once now.

const { shop: SHOP, batch: BATCH } = CLUSTER_FIPS;
const ALL = ['h1', 'h2', 'h3', 'h4'];
const COUNT = 2000;
const module = (path: string) => fileURLToPath(new URL(path, import.meta.url));

t.test('a failover of two IPs at once installs the synced connections of both', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab));
  await Promise.all(ALL.map((h) => lab.startDaemon(h, cfg)));
  await settled(lab, ALL, 15_000);
  // h1 holds both primary IPs (h2 and h3, their other candidates, drained); h2 alone may take them.
  for (const h of ['h2', 'h3']) await lab.egress(h, ['drain']);
  let owners = (await settled(lab, ALL, 15_000)).floatingIPs;
  t.same([owners[SHOP], owners[BATCH]], ['h1', 'h1'], 'h1 holds both');
  await lab.egress('h2', ['undrain']);
  owners = (await settled(lab, ALL, 15_000)).floatingIPs;
  t.same([owners[SHOP], owners[BATCH]], ['h1', 'h1'], 'and keeps them when h2 is back');

  const script = `
import { insertEntries } from ${JSON.stringify(module('../../src/dataplane/conntrack-insert.js'))};
const made = (ip, server) => Array.from({ length: ${COUNT} }, (_, i) => ({
  proto: 6, src: '10.20.' + (i >> 8) + '.' + (i & 255), dst: server, sport: 20000 + (i % 30000), dport: 443,
  natIp: ip, natPort: 20000 + (i % 30000), status: 6, timeout: 3600, tcpState: 3,
}));
const r = await insertEntries([...made('${SHOP}', '203.0.113.1'), ...made('${BATCH}', '203.0.113.2')]);
console.log(JSON.stringify({ inserted: r.inserted }));
`;
  const filled = await run(['ip', 'netns', 'exec', lab.ns('h1'), ...NODE, '--input-type=module', '-e', script]);
  t.same(JSON.parse(filled.stdout), { inserted: 2 * COUNT }, `${COUNT} connections for each IP on h1`);
  await waitUntil(
    'h2 to cache them',
    async () => {
      const { cached } = (await lab.status('h2')).connectionSync as { cached: Record<string, number> };
      return (cached[SHOP] ?? 0) >= COUNT && (cached[BATCH] ?? 0) >= COUNT;
    },
    15_000,
    200,
  );

  const cut = Date.now();
  await cutOff(lab, 'h1');
  owners = (await settled(lab, ['h2', 'h3', 'h4'], 15_000)).floatingIPs;
  t.same([owners[SHOP], owners[BATCH]], ['h2', 'h2'], 'h2 takes both at once');
  const installs = await waitUntil(
    "h2's installs",
    () => {
      const lines = readFileSync(lab.daemonLog('h2'), 'utf8')
        .split('\n')
        .filter((l) => l.includes('synced connections for'))
        .map((l) => JSON.parse(l) as { time: number; msg: string })
        .filter((l) => l.time >= cut)
        .map((l) => l.msg);
      return Promise.resolve(lines.length >= 2 && lines);
    },
    5000,
    100,
  ).catch(() => [] as string[]);
  for (const ip of [SHOP, BATCH]) {
    const line = installs.find((l) => l.includes(` ${ip} `));
    const n = Number(/^install (\d+) /.exec(line ?? '')?.[1] ?? 0);
    t.ok(n >= COUNT, `${ip}: ${line ?? 'no install'}`);
  }
});
