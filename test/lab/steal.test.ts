import t, { type Test } from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CLUSTER_CONTAINERS,
  CLUSTER_FIPS,
  CLUSTER_HOSTS,
  clusterConfig,
  labSite,
  settled,
  siteConfig,
  waitUntil,
  type ClusterConfigOptions,
} from '../../lab/cluster.js';
import { intrude, type Intrusion } from '../../lab/intruder.js';
import { Lab, SUBNET_PREFIX } from '../../lab/lab.js';

// Issue 10, item 2: an unprivileged local user must not be able to take a node's
// heartbeats. Such a user binds the heartbeat address and port with SO_REUSEADDR;
// the daemon's socket must refuse to share (EADDRINUSE), and the cluster must not
// notice the attempt: no owner changes, one holder per IP. Reloads that change only
// the destinations (peers) or rebind elsewhere (another group) still work without
// SO_REUSEADDR.

const FIPS = Object.values(CLUSTER_FIPS);
const PORT = 7627;
const HOLD_MS = 5000;
// Down after 3 × 250 ms: a loaded test machine stalls for 300 ms now and then.
const INTERVAL_MS = 250;

/** While `attack` runs: owner changes counted by the daemons, and the most hosts seen holding one IP. */
async function watch(lab: Lab, names: readonly string[], attack: Promise<Intrusion>) {
  const failovers = async () => {
    const all = await Promise.all(names.map((h) => lab.status(h)));
    return all.reduce((n, s) => n + Object.values(s.counters.failovers).reduce((a, b) => a + b, 0), 0);
  };
  const before = await failovers();
  let done = false;
  let maxHolders = 0;
  const intrusion = attack.finally(() => (done = true));
  while (!done) {
    for (const ip of FIPS) maxHolders = Math.max(maxHolders, (await lab.holders(ip)).length);
    await sleep(250);
  }
  return { intrusion: await intrusion, changes: (await failovers()) - before, maxHolders };
}

const reloaded = (lab: Lab, h: string): boolean =>
  readFileSync(lab.daemonLog(h), 'utf8')
    .split('\n')
    .some((l) => l.includes('"msg":"reloaded '));

async function cluster(t: Test, opts: ClusterConfigOptions) {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab, { ...opts, port: PORT, intervalMs: INTERVAL_MS }));
  const names = lab.hosts.map((h) => h.name);
  await Promise.all(names.map((h) => lab.startDaemon(h, cfg)));
  await settled(lab, names, 30_000);
  const reload = async (text: string) => {
    writeFileSync(cfg, text);
    for (const h of names) lab.signalDaemon(h, 'SIGHUP');
    await waitUntil('every daemon to reload', async () => names.every((h) => reloaded(lab, h)));
    const s = await settled(lab, names, 30_000);
    t.same(s.nodes, { ...s.nodes, h1: 'Up', h2: 'Up', h3: 'Up', h4: 'Up' }, 'every node still hears every other');
  };
  return { lab, names, reload };
}

t.test('unicast: nobody else can bind the heartbeat address and port', async (t) => {
  const { lab, names, reload } = await cluster(t, { transport: 'unicast' });
  const victim = 'h2';
  const r = await watch(lab, names, intrude(lab, victim, lab.host(victim).ip, PORT, HOLD_MS));
  t.equal(r.intrusion.bind, 'EADDRINUSE', `nobody's bind of ${lab.host(victim).ip}:${PORT} is refused`);
  t.equal(r.intrusion.received, 0, 'it receives no heartbeat');
  t.equal(r.changes, 0, 'no ownership change');
  t.equal(r.maxHolders, 1, 'one holder per IP');

  // Only the destinations change (a fifth node): the socket stays, so the reload works without SO_REUSEADDR.
  const five = [...lab.hosts, { name: 'h5', ip: `${SUBNET_PREFIX}.5` }];
  await reload(
    siteConfig({ ...labSite(lab), hosts: five }, { transport: 'unicast', port: PORT, intervalMs: INTERVAL_MS }),
  );
  t.equal((await intrude(lab, victim, lab.host(victim).ip, PORT, 100)).bind, 'EADDRINUSE', 'still not shared');
});

t.test('multicast: nobody else can bind the port, on any address', async (t) => {
  const { lab, names, reload } = await cluster(t, { transport: 'multicast' });
  const victim = 'h2';
  const r = await watch(lab, names, intrude(lab, victim, lab.host(victim).ip, PORT, HOLD_MS));
  t.equal(r.intrusion.bind, 'EADDRINUSE', `nobody's bind of ${lab.host(victim).ip}:${PORT} is refused`);
  t.equal(r.changes, 0, 'no ownership change');
  t.equal(r.maxHolders, 1, 'one holder per IP');
  for (const address of ['0.0.0.0', '239.255.76.67'])
    t.equal((await intrude(lab, victim, address, PORT, 100)).bind, 'EADDRINUSE', `nor ${address}:${PORT}`);

  // Another group on the same port: the same socket, with the new membership.
  const text = clusterConfig(lab, { transport: 'multicast', port: PORT, intervalMs: INTERVAL_MS }).replace(
    '239.255.76.67',
    '239.255.76.68',
  );
  await reload(text);
  t.equal((await intrude(lab, victim, '239.255.76.68', PORT, 100)).bind, 'EADDRINUSE', 'the new group is not shared');
});
