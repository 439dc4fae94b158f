import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CLUSTER_CONTAINERS,
  CLUSTER_FIPS,
  CLUSTER_HOSTS,
  clusterConfig,
  settled,
  waitUntil,
} from '../../lab/cluster.js';
import { ECHO, Lab, type DaemonStatus } from '../../lab/lab.js';
import { labScript } from '../../lab/paths.js';
import { cutOff, nowNs, outage, startProber, waitForFlow } from '../../lab/traffic.js';
import type { DropReason } from '../../src/cluster/protocol.js';
import { virtualMac } from '../../src/plan/naming.js';
import { parseAddress } from '../../src/util/ip.js';

// The cluster on the real kernel: four daemons (`egress-natd run`) in four lab hosts,
// heartbeats over multicast on the lab's bridge, real traffic to the echo server.

const { shop: SHOP, batch: BATCH, reports: REPORTS } = CLUSTER_FIPS;
const FIPS = [SHOP, BATCH, REPORTS];
const INTERVAL_MS = 100;
const TIMEOUT_MS = 3 * INTERVAL_MS;
const macOf = (ip: string) => {
  const a = parseAddress(ip);
  if (!a.ok) throw new Error(a.error);
  return virtualMac(a.value);
};

t.test('cluster', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab));
  const names = lab.hosts.map((h) => h.name);

  const settledOn = (running = names) => settled(lab, running);
  const start = async (hosts: string[]) => Promise.all(hosts.map((h) => lab.startDaemon(h, cfg)));

  await start(names);
  let status: DaemonStatus = await settledOn();

  await t.test('initial owners follow the election rules (docs/design.md)', async (t) => {
    const o = status.floatingIPs;
    t.same(status.nodes, { h1: 'Up', h2: 'Up', h3: 'Up', h4: 'Up' });
    t.same(
      [o[SHOP], o[BATCH]].sort(),
      ['h1', 'h2'],
      'primary (labelled nodes): one IP on each labelled worker, none on the control plane',
    );
    t.equal(o[REPORTS], 'h4', 'secondary (any node): the worker without an IP gets it');
    t.equal(
      (await lab.holders(SHOP)).length + (await lab.holders(BATCH)).length + (await lab.holders(REPORTS)).length,
      3,
      'each IP on exactly one host',
    );
    t.equal(await lab.probe('c1', ECHO.inPolicy), SHOP, 'c1 (behind h3) leaves with the shop IP');
    t.equal(await lab.probe('c2', ECHO.inPolicy), BATCH, 'c2 (behind h4) leaves with the batch IP');
    t.equal(await lab.probe('c1', ECHO.other), REPORTS, 'c1 to the other service leaves with the reports IP');
    t.equal(await lab.probe('c1', ECHO.excluded), '10.10.1.2', 'an excluded destination is not NATed');
    const list = (await lab.egress('h3', ['egress', 'list'])).stdout;
    t.match(
      list,
      new RegExp(`10\\.10\\.1\\.0/24\\s+203\\.0\\.113\\.0/24\\s+${SHOP.replaceAll('.', '\\.')}\\s+${o[SHOP]}`),
      'egress list shows source, destination, egress IP and gateway node',
    );
  });

  await t.test('owner cut off the segment (link down + kill -9): another host takes over', async (t) => {
    const victim = status.floatingIPs[SHOP]!;
    const probe = await startProber(lab, 'c1', ECHO.inPolicy);
    t.teardown(() => probe.stop());
    await waitForFlow(probe.log, SHOP);
    const cut = await cutOff(lab, victim);
    await waitForFlow(probe.log, SHOP, 5000);
    const o = outage(await probe.stop(), cut, SHOP);
    t.comment(`traffic back with ${SHOP} ${o.recoveredMs?.toFixed(0)} ms after the cut`);
    t.same(o.ips, [SHOP], 'the echo server saw only the shop IP, before and after');
    const others = names.filter((n) => n !== victim);
    status = await settledOn(others);
    const heir = status.floatingIPs[SHOP]!;
    t.equal(heir, victim === 'h1' ? 'h2' : 'h1', 'the other labelled worker, before the control plane');
    t.equal(status.nodes[victim], 'Down');
    const neigh = (await lab.sh('r', `ip neigh show ${SHOP}`)).stdout;
    t.match(neigh, macOf(SHOP), "the router's neighbour entry holds the IP's virtual MAC");
    t.notMatch(neigh, /FAILED|INCOMPLETE/, 'and is usable');
    const fdb = (await lab.sh('sw', `bridge fdb show br br0 | grep -i '${macOf(SHOP)}'`)).stdout;
    t.match(fdb, `dev p-${heir}`, "the switch learned the MAC on the new owner's port (gratuitous ARP)");

    await t.test('the old owner returns: nothing moves', async (t) => {
      const before = JSON.stringify(status.floatingIPs);
      await lab.restartDaemon(victim, cfg);
      const back = await settledOn();
      t.equal(back.nodes[victim], 'Up');
      await sleep(5 * INTERVAL_MS);
      const after = await settledOn();
      t.equal(JSON.stringify(after.floatingIPs), before, 'every IP stays with its owner');
      status = after;
    });
  });

  await t.test('partition in two, then heal: one owner per IP', async (t) => {
    const sideA = ['h1', 'h2'];
    const sideB = ['h3', 'h4', 'r'];
    const set = (xs: string[]) => `{ ${xs.map((x) => `"p-${x}"`).join(', ')} }`;
    await lab.sh(
      'sw',
      `nft add table bridge part && nft add chain bridge part f '{ type filter hook forward priority 0; }' && nft add rule bridge part f iifname ${set(sideA)} oifname ${set(sideB)} drop && nft add rule bridge part f iifname ${set(sideB)} oifname ${set(sideA)} drop`,
    );
    const doubled = await waitUntil(
      'both sides to claim every IP',
      async () => {
        const holders = await Promise.all(FIPS.map((ip) => lab.holders(ip)));
        return holders.every((h) => h.some((x) => sideA.includes(x)) && h.some((x) => !sideA.includes(x))) && holders;
      },
      5000,
    );
    t.ok(doubled, `during the partition both sides hold every IP: ${JSON.stringify(doubled)}`);
    const healed = nowNs();
    await lab.sh('sw', 'nft delete table bridge part');
    await waitUntil(
      'one holder per IP',
      async () => (await Promise.all(FIPS.map((ip) => lab.holders(ip)))).every((h) => h.length === 1),
      5000,
    );
    const ms = Number(nowNs() - healed) / 1e6;
    t.comment(`one holder per IP ${ms.toFixed(0)} ms after the heal (heartbeat interval ${INTERVAL_MS} ms)`);
    // One interval to hear each other, plus one reconcile and the polling of four hosts.
    t.ok(ms < INTERVAL_MS + 900, 'settled within one interval (plus the time to apply)');
    status = await settledOn();
    t.same(
      Object.values(status.floatingIPs).filter((o) => o === 'h3'),
      [],
      'the control-plane node gave its IPs back to workers',
    );
    t.equal(await lab.probe('c1', ECHO.inPolicy), SHOP, 'traffic flows with the shop IP again');
  });

  await t.test('SIGTERM of an owner: takeover without waiting for the timeout', async (t) => {
    const victim = status.floatingIPs[BATCH]!;
    const probe = await startProber(lab, 'c2', ECHO.inPolicy);
    t.teardown(() => probe.stop());
    await waitForFlow(probe.log, BATCH);
    const stopped = nowNs();
    t.equal(await lab.stopDaemon(victim, 'SIGTERM'), 0, 'the daemon exits 0');
    const stopMs = Number(nowNs() - stopped) / 1e6;
    await waitForFlow(probe.log, BATCH, 2000);
    await sleep(400); // so that requests sent around the handover count
    const o = outage(await probe.stop(), stopped, BATCH);
    t.comment(`SIGTERM: daemon gone after ${stopMs.toFixed(0)} ms; ${o.lost} of ${o.sent} requests lost`);
    t.ok(stopMs < TIMEOUT_MS, `the handover took less than the ${TIMEOUT_MS} ms Down timeout`);
    t.same(o.ips, [BATCH]);
    t.equal((await lab.holders(BATCH)).length, 1);
    t.notOk((await lab.holders(BATCH)).includes(victim), 'the stopped host holds nothing');
    t.ok(
      (await lab.sh(victim, 'nft list tables')).stdout.includes('egress_natd'),
      'and keeps its steering (docs/design.md, "Stop and start"): only `release` removes it',
    );
    await lab.startDaemon(victim, cfg);
    status = await settledOn();
  });

  await t.test('drain hands the IPs over; undrain takes nothing back', async (t) => {
    const victim = status.floatingIPs[SHOP]!;
    const probe = await startProber(lab, 'c1', ECHO.inPolicy);
    t.teardown(() => probe.stop());
    await waitForFlow(probe.log, SHOP);
    const since = nowNs();
    const answer = JSON.parse((await lab.egress(victim, ['drain'])).stdout) as {
      handedOver: Record<string, string | null>;
      holds: string[];
    };
    t.ok(
      answer.handedOver[SHOP] && answer.handedOver[SHOP] !== victim,
      `drain answered: ${SHOP} went to ${answer.handedOver[SHOP]}`,
    );
    t.same(answer.holds, [], 'nothing left on the drained node');
    await sleep(400);
    const o = outage(await probe.stop(), since, SHOP);
    t.comment(`drain: ${o.lost} of ${o.sent} requests lost`);
    status = await settledOn();
    t.equal(status.floatingIPs[SHOP], answer.handedOver[SHOP]);
    await lab.egress(victim, ['undrain']);
    await sleep(5 * INTERVAL_MS);
    const after = await settledOn();
    t.same(after.floatingIPs, status.floatingIPs, 'undrain moves nothing back');
    status = after;
  });

  await t.test('forged, replayed and random datagrams change nothing', async (t) => {
    const before = await lab.status('h1');
    const inject = (host: string, mode: string, local: string, arg: string) =>
      lab.sh(
        host,
        `${process.execPath} ${labScript('inject')} ${mode} ${join(lab.dir, 'cluster.key')} ${lab.id} 239.255.76.67 7607 ${local} ${arg}`,
      );
    const captured = (await inject('r', 'capture', '192.168.1.254', 'h2')).stdout.trim();
    const r = await inject('h2', 'attack', '192.168.1.2', captured);
    t.comment(`sent: ${r.stdout.trim()}`);
    await sleep(3 * INTERVAL_MS);
    const after = await lab.status('h1');
    t.same(after.floatingIPs, before.floatingIPs, 'owners unchanged');
    t.same(after.nodes, before.nodes, 'nodes unchanged (the forged "leaving" of h2 was not believed)');
    const d = (k: DropReason) => after.counters.dropped[k] - before.counters.dropped[k];
    t.ok(d('replay') >= 5, `replays dropped: ${d('replay')}`);
    t.ok(d('bad-mac') >= 5, `forged (wrong key) dropped: ${d('bad-mac')}`);
    t.ok(
      d('malformed') + d('oversized') + d('bad-magic') + d('truncated') + d('bad-version') >= 150,
      'random and damaged datagrams dropped, counted by reason',
    );
    t.equal(await lab.probe('c1', ECHO.inPolicy), SHOP, 'traffic unaffected');
    const alive = await Promise.all(
      names.map((h) =>
        lab.status(h).then(
          () => true,
          () => false,
        ),
      ),
    );
    t.same(
      alive,
      names.map(() => true),
      'every daemon still answers',
    );
  });

  await t.test('the kernel is repaired within a second', async (t) => {
    const owner = status.floatingIPs[SHOP]!;
    await lab.sh(owner, 'nft delete table inet egress_natd');
    await waitUntil(
      'the table back',
      async () => (await lab.sh(owner, 'nft list tables')).stdout.includes('egress_natd'),
      1000,
    );
    await lab.sh(owner, `ip addr del ${SHOP}/32 dev enat${(0xc0a80164).toString(16)}`);
    await waitUntil('the address back', async () => (await lab.holders(SHOP)).includes(owner), 1000);
    await lab.sh('h3', 'ip rule del pref 7601');
    await waitUntil(
      'the rule back',
      async () => (await lab.sh('h3', 'ip rule show pref 7601')).stdout.includes('7601'),
      1000,
    );
    t.equal(await lab.probe('c1', ECHO.inPolicy), SHOP, 'traffic flows with the shop IP');
    t.pass('table, floating IP and ip rule each back within 1 s');
  });

  await t.test('noGateway: drop: nothing of the policy leaves with a node IP while no host owns its IP', async (t) => {
    for (const h of ['h1', 'h2', 'h3']) await lab.stopDaemon(h, 'SIGTERM');
    await waitUntil(
      'batch without a gateway',
      async () => (await lab.status('h4')).policies['batch']!.state === 'NoGateway' && true,
      3000,
    );
    const capture = lab.sh(
      'r',
      `timeout 3 tcpdump -l -n -i eth0 'ip and dst net 203.0.113.0/24 and (src net 10.10.2.0/24 or src host 192.168.1.1 or src host 192.168.1.2 or src host 192.168.1.3 or src host 192.168.1.4)' 2>/dev/null`,
      { allowFail: true, timeoutMs: 10_000 },
    );
    await sleep(500);
    const probes = await Promise.all([1, 2, 3, 4, 5].map(() => lab.probe('c2', ECHO.inPolicy, { timeoutS: 1 })));
    const seen = (await capture).stdout.trim().split('\n').filter(Boolean);
    t.comment(seen.slice(0, 5).join('\n'));
    t.same(probes, [undefined, undefined, undefined, undefined, undefined], 'c2 gets no answer');
    t.same(seen, [], 'the router saw no packet from c2 or with a node IP (tcpdump)');

    await lab.startDaemon('h1', cfg);
    await waitUntil(
      'batch active again',
      async () =>
        (await lab.status('h4')).policies['batch']!.state === 'Active' && (await lab.holders(BATCH)).length === 1,
      5000,
    );
    t.equal(await lab.probe('c2', ECHO.inPolicy), BATCH, 'once h1 is back, c2 leaves with the batch IP');
  });
});
