import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CLUSTER_CONTAINERS,
  CLUSTER_FIPS,
  CLUSTER_HOSTS,
  clusterConfig,
  settled,
  waitUntil,
} from '../../lab/cluster.js';
import { ECHO, Lab } from '../../lab/lab.js';

// The same cluster with unicast heartbeats (to every node's address), and a daemon
// that stays alive while its link loses carrier: it gives up its IPs at once, and
// when carrier returns it listens first and takes nothing back.

const { shop: SHOP } = CLUSTER_FIPS;

t.test('unicast heartbeats; loss of carrier', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab, { transport: 'unicast', port: 7617 }));
  const names = lab.hosts.map((h) => h.name);
  await Promise.all(names.map((h) => lab.startDaemon(h, cfg)));
  const status = await settled(lab, names);
  t.same(status.nodes, { h1: 'Up', h2: 'Up', h3: 'Up', h4: 'Up' }, 'every node hears every other over unicast');
  t.same([status.floatingIPs[SHOP], status.floatingIPs[CLUSTER_FIPS.batch]].sort(), ['h1', 'h2']);
  t.equal(await lab.probe('c1', ECHO.inPolicy), SHOP);

  const owner = status.floatingIPs[SHOP]!;
  await lab.setPort(owner, false); // the host's eth0 loses carrier; its daemon keeps running
  await waitUntil(`${owner} to give up ${SHOP}`, async () => !(await lab.holders(SHOP)).includes(owner), 3000);
  const own = await lab.status(owner);
  t.notOk(own.ready, 'without carrier the node is not ready');
  const others = names.filter((n) => n !== owner);
  const after = await settled(lab, others);
  t.not(after.floatingIPs[SHOP], owner, `${SHOP} moved to ${after.floatingIPs[SHOP]}`);
  t.equal(after.nodes[owner], 'Down', 'the others stopped hearing it');
  t.equal(await lab.probe('c1', ECHO.inPolicy), SHOP, 'traffic flows with the same IP');

  await lab.setPort(owner, true);
  // Carrier makes the node ready again before its first heartbeat reaches the others:
  // agreement alone is not enough, every node must have heard it.
  const everyoneHearsIt = async () => {
    const all = await Promise.all(names.map((h) => lab.status(h)));
    return all.every((s) => s.nodes[owner] === 'Up') || undefined;
  };
  await waitUntil(`every node to hear ${owner} again`, everyoneHearsIt, 10_000);
  const back = await settled(lab, names);
  t.equal(back.nodes[owner], 'Up');
  t.same(back.floatingIPs, after.floatingIPs, 'carrier back: it listened first and took nothing');
});
