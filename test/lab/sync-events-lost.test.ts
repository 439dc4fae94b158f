import t from 'tap';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
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

// The owner follows the kernel's conntrack events; when its listener dies (the kernel
// drops events it cannot queue: ENOBUFS under a burst), it sweeps the table and sends
// everything again. The sweep used to run at once, before another listener was up: a
// connection made in between was in neither, and the candidates learned of it only at
// the next periodic sweep (one every 10 s, or every 50 sweep lengths: 100 s for 100,000
// connections, measured by the sync bench). The sweep now follows the new listener.

const SHOP = CLUSTER_FIPS.shop;
const ALL = ['h1', 'h2', 'h3', 'h4'];
const COUNT = 200;
const module = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/** The pid of the conntrack event listener among the children of the daemon `pid`. */
function listenerOf(pid: number): number {
  for (const task of readdirSync(`/proc/${pid}/task`))
    for (const child of readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean))
      if (readFileSync(`/proc/${child}/cmdline`, 'utf8').includes('conntrack-events-child')) return Number(child);
  throw new Error(`daemon ${pid} has no conntrack event listener`);
}

t.test('connections made while the event listener is down reach the candidates at once', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab));
  await Promise.all(ALL.map((h) => lab.startDaemon(h, cfg)));
  const owner = (await settled(lab, ALL, 15_000)).floatingIPs[SHOP]!;
  const candidate = ['h1', 'h2', 'h3'].find((h) => h !== owner)!;
  type Sync = { cached: Record<string, number>; eventsLost: number };
  const sync = async (h: string) => (await lab.status(h)).connectionSync as Sync;
  const before = (await sync(candidate)).cached[SHOP] ?? 0;

  // Kills the listener and waits for the owner to log the loss (the old code swept right
  // then), then 150 ms more (that sweep's walk of the table is over; a listener is started
  // 200 ms after the death), and inserts COUNT established connections SNATed to the shop
  // IP, as the sync bench does.
  const listener = listenerOf(lab.daemons.get(owner)!.pid!);
  const script = `
import { insertEntries } from ${JSON.stringify(module('../../src/dataplane/conntrack-insert.js'))};
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
const log = ${JSON.stringify(lab.daemonLog(owner))};
const entries = Array.from({ length: ${COUNT} }, (_, i) => ({
  proto: 6, src: '10.20.0.' + (1 + (i % 250)), dst: '203.0.113.1', sport: 20000 + i, dport: 443,
  natIp: '${SHOP}', natPort: 20000 + i, status: 6, timeout: 3600, tcpState: 3,
}));
const losses = () => readFileSync(log, 'utf8').split('conntrack events lost').length;
const seen = losses();
process.kill(${listener}, 'SIGKILL');
while (losses() === seen) await sleep(5);
await sleep(150);
const r = await insertEntries(entries);
console.log(JSON.stringify({ inserted: r.inserted }));
`;
  const filled = await run(['ip', 'netns', 'exec', lab.ns(owner), ...NODE, '--input-type=module', '-e', script]);
  t.same(JSON.parse(filled.stdout), { inserted: COUNT }, `${COUNT} connections inserted on ${owner}`);
  const inserted = Date.now();
  await waitUntil(`${owner} to count the lost events`, async () => (await sync(owner)).eventsLost >= 1, 5000);
  const next = await waitUntil('another listener', () => {
    try {
      const pid = listenerOf(lab.daemons.get(owner)!.pid!);
      return Promise.resolve(pid !== listener && pid);
    } catch {
      return Promise.resolve(undefined);
    }
  });
  t.pass(`another listener runs: ${next}`);
  // Well under the 10 s of the periodic sweep.
  const cached = await waitUntil(
    `${candidate} to cache the ${COUNT} connections`,
    async () => {
      const n = (await sync(candidate)).cached[SHOP] ?? 0;
      return n >= before + COUNT && n;
    },
    3000,
    100,
  ).catch(async (e: Error) => {
    t.fail(`${e.message}: ${candidate} has ${(await sync(candidate)).cached[SHOP] ?? 0} (had ${before})`);
    return undefined;
  });
  if (cached) t.pass(`${candidate} has them ${Date.now() - inserted} ms after they were made (${cached} cached)`);
});
