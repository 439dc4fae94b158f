import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCapture } from '../../lab/capture.js';
import { CLUSTER_CONTAINERS, CLUSTER_FIPS, CLUSTER_HOSTS, clusterConfig, settled } from '../../lab/cluster.js';
import { ECHO, Lab, SUBNET_PREFIX, type DaemonStatus } from '../../lab/lab.js';
import { cutOff, startProber, waitForFlow, type Prober } from '../../lab/traffic.js';

// No leak without SNAT (docs/design.md, "Handover rules"): with `noGateway: drop`,
// selected traffic never reaches the router with a workload's or a node's own address,
// whatever happens to the daemons: a failover, a handover, a reload, and a restart of the
// daemon on the workload's own host, gentle (SIGTERM) or not (kill -9, then what systemd
// runs after it: ExecStopPost). Two containers probe their policy destination all along;
// tcpdump on the router counts what arrives with a source that is not a floating IP.

const { shop: SHOP, batch: BATCH } = CLUSTER_FIPS;
/** A floating IP the reload adds, for the shop policy. */
const AUDIT = `${SUBNET_PREFIX}.103`;
const LEAK_FILTER = `ip dst host ${ECHO.inPolicy} and (ip src net 10.10.0.0/16 or ${CLUSTER_HOSTS.map((h) => `ip src host ${h.ip}`).join(' or ')})`;

t.test('no packet leaves without SNAT (noGateway: drop)', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  const base = clusterConfig(lab, { noGateway: 'drop' });
  writeFileSync(cfg, base);
  const names = lab.hosts.map((h) => h.name);
  // Generous: on a loaded machine four daemons may take long to start; leaks, not speed, are measured here.
  const settle = () => settled(lab, names, 30_000);
  await Promise.all(names.map((h) => lab.startDaemon(h, cfg)));
  let status: DaemonStatus = await settle();

  const capture = await startCapture(lab, LEAK_FILTER);
  const c1: Prober = await startProber(lab, 'c1', ECHO.inPolicy);
  const c2: Prober = await startProber(lab, 'c2', ECHO.inPolicy);
  t.teardown(() => Promise.all([c1.stop(), c2.stop(), capture.stop()]));
  await waitForFlow(c1.log, SHOP);
  await waitForFlow(c2.log, BATCH);

  const leaks: Record<string, number> = {};
  /** Runs one disturbance and counts what reached the router un-SNATed meanwhile (and 300 ms after). */
  const phase = async (name: string, disturb: () => Promise<void>) => {
    const before = capture.packets().length;
    await disturb();
    await sleep(300);
    const seen = capture.packets().slice(before);
    leaks[name] = seen.length;
    if (seen.length) t.comment(`${name}: ${seen.length} leaked, first: ${seen[0]!.line}; last: ${seen.at(-1)!.line}`);
    t.equal(seen.length, 0, `${name}: no packet reached the router with a workload's or node's address`, {
      first: seen.slice(0, 3).map((p) => p.line),
    });
  };
  const flowOf = { h3: { prober: c1, ip: SHOP }, h4: { prober: c2, ip: BATCH } };
  /** Stops the daemon of a workload's host; its workload's traffic keeps its floating IP while no daemon runs. */
  const restartOn = async (host: 'h3' | 'h4', how: 'SIGTERM' | 'SIGKILL', stopPost = () => lab.stopPost(host, cfg)) => {
    await lab.stopDaemon(host, how);
    const { stdout } = await stopPost();
    t.match(stdout, /^steering /m, `ExecStopPost on ${host}: ${stdout.trim().split('\n').at(-1)}`);
    await waitForFlow(flowOf[host].prober.log, flowOf[host].ip, 2000);
    await lab.startDaemon(host, cfg);
    status = await settle();
  };

  await phase('failover (the shop owner cut off and killed, then back)', async () => {
    const victim = status.floatingIPs[SHOP]!;
    await cutOff(lab, victim);
    await waitForFlow(c1.log, SHOP, 5000);
    await lab.restartDaemon(victim, cfg);
    status = await settle();
  });

  await phase('handover (SIGTERM of the batch owner, then start)', async () => {
    const victim = status.floatingIPs[BATCH]!;
    await lab.stopDaemon(victim, 'SIGTERM');
    await waitForFlow(c2.log, BATCH, 2000);
    await lab.startDaemon(victim, cfg);
    status = await settle();
  });

  await phase('reload (SIGHUP): shop moves to a new floating IP, and back', async () => {
    const moved = base
      .replace(`floatingIPs: [${SHOP}, ${BATCH}]`, `floatingIPs: [${SHOP}, ${BATCH}, ${AUDIT}]`)
      .replace(`egressIP: ${SHOP}`, `egressIP: ${AUDIT}`);
    t.not(moved, base, 'the reloaded config moves the shop policy');
    for (const text of [moved, base]) {
      writeFileSync(cfg, text);
      for (const h of names) lab.signalDaemon(h, 'SIGHUP');
      await waitForFlow(c1.log, text === base ? SHOP : AUDIT, 5000);
    }
    t.equal(readFileSync(cfg, 'utf8'), base);
    status = await settle();
  });

  for (const [host, container] of [
    ['h3', 'c1'],
    ['h4', 'c2'],
  ] as const) {
    await phase(`restart of ${host}, the host of ${container} (SIGTERM, then start)`, () => restartOn(host, 'SIGTERM'));
    await phase(`restart of ${host}, the host of ${container} (kill -9, ExecStopPost, then start)`, () =>
      restartOn(host, 'SIGKILL'),
    );
  }

  await phase('kill -9 of h3, ExecStopPost without a valid config (steering as found), then start', () =>
    restartOn('h3', 'SIGKILL', async () => {
      const r = await lab.egress('h3', ['release', '--keep-steering', '-c', join(lab.dir, 'missing.yaml'), '-n', 'h3']);
      t.match(r.stdout, 'steering as found: no valid config');
      return r;
    }),
  );

  await waitForFlow(c1.log, SHOP);
  await waitForFlow(c2.log, BATCH);
  const total = Object.values(leaks).reduce((a, b) => a + b, 0);
  t.comment(`leaked packets by phase: ${JSON.stringify(leaks)}`);
  const sent = c1.log().sent.size + c2.log().sent.size;
  t.equal(total, 0, `none of ${sent} requests reached the router without SNAT`);
  const sources = new Set([...c1.log().replies, ...c2.log().replies].map((r) => r.ip));
  t.same(
    [...sources].filter((ip) => ![SHOP, BATCH, AUDIT].includes(ip)),
    [],
    `the echo server answered only floating IPs: ${[...sources].join(', ')}`,
  );
});
