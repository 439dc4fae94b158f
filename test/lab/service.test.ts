import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DgramSocket } from 'node-unix-socket';
import {
  CLUSTER_CONTAINERS,
  CLUSTER_FIPS,
  CLUSTER_HOSTS,
  clusterConfig,
  settled,
  waitUntil,
} from '../../lab/cluster.js';
import { policiesYaml } from '../../lab/config.js';
import { ECHO, Lab, SUBNET_PREFIX } from '../../lab/lab.js';
import { scrape } from '../../lab/scrape.js';
import { longestGap, nowNs, outage, startProber, waitForFlow } from '../../lab/traffic.js';

// The daemon as a service, on the real kernel: systemd's notify protocol on a real unix
// datagram socket, Prometheus metrics scraped over HTTP, SIGHUP reloads (bad and good)
// with traffic flowing, and config drift between nodes.

const { shop: SHOP, batch: BATCH } = CLUSTER_FIPS;
const AUDIT = `${SUBNET_PREFIX}.103`;
const METRICS_PORT = 9607;
const WATCHDOG_USEC = 400_000;

/**
 * A config with one more floating IP, inserted first in the primary gateway (so that file
 * order would renumber the marks of the IPs that carry traffic), and a policy that uses it.
 */
function grown(base: string): string {
  return base
    .replace(`floatingIPs: [${SHOP}, ${BATCH}]`, `floatingIPs: [${AUDIT}, ${SHOP}, ${BATCH}]`)
    .concat(
      `${policiesYaml([{ name: 'audit', from: { app: 'batch' }, to: `${ECHO.other}/32`, gateway: 'primary', egressIP: AUDIT }])}\n`,
    );
}

interface Note {
  readonly at: bigint;
  readonly text: string;
}

t.test('service', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const names = lab.hosts.map((h) => h.name);
  const cfg = (h: string) => join(lab.dir, `config-${h}.yaml`);
  const base = clusterConfig(lab);
  for (const h of names) writeFileSync(cfg(h), base);
  const log = (h: string) =>
    readFileSync(lab.daemonLog(h), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { level: number; msg: string; [k: string]: unknown });

  // systemd's end of NOTIFY_SOCKET for h1.
  const notes: Note[] = [];
  const systemd = new DgramSocket();
  systemd.bind(join(lab.dir, 'notify.sock'));
  systemd.on('data', (buf: Buffer) => notes.push({ at: nowNs(), text: buf.toString() }));
  t.teardown(() => systemd.close());
  const notesSince = (since: bigint) => notes.filter((n) => n.at >= since).map((n) => n.text);
  /** What the daemon said about its state: without the watchdog's pings, which run on their own timer. */
  const toldSince = (since: bigint) => notesSince(since).filter((n) => n !== 'WATCHDOG=1');

  const started = nowNs();
  await lab.startDaemon('h1', cfg('h1'), [], {
    NOTIFY_SOCKET: join(lab.dir, 'notify.sock'),
    WATCHDOG_USEC: String(WATCHDOG_USEC),
  });
  await Promise.all(names.slice(1).map((h) => lab.startDaemon(h, cfg(h))));
  let status = await settled(lab, names);

  await t.test('sd_notify: READY=1 after the first reconcile, STATUS, WATCHDOG=1 from the event loop', async (t) => {
    const ready = await waitUntil('READY=1', async () => notes.find((n) => n.text.split('\n').includes('READY=1')));
    t.ok(Number(ready.at - started) / 1e6 >= 2000, 'not before the daemon has listened (2 s) and reconciled');
    const firstReconcile = log('h1').find((l) => l.msg === 'first reconcile done: service ready');
    t.ok(firstReconcile, 'the daemon logged its first reconcile');
    const before = notes.filter((n) => n.at < ready.at).map((n) => n.text);
    t.ok(
      before.some(
        (n) =>
          n === 'STATUS=listening before taking part; 1/4 nodes up' ||
          /^STATUS=listening before taking part; \d\/4 nodes up$/.test(n),
      ),
      'STATUS said it was listening before READY',
    );
    const holds = Object.entries(status.floatingIPs)
      .filter(([, o]) => o === 'h1')
      .map(([ip]) => ip);
    const want = holds.length
      ? `STATUS=owner of ${holds.sort().join(', ')}; 4/4 nodes up`
      : 'STATUS=standby, owns no floating IP; 4/4 nodes up';
    await waitUntil(
      `h1's last STATUS to be "${want}"`,
      async () => notes.filter((n) => n.text.startsWith('STATUS=')).at(-1)?.text === want,
    );
    t.pass(`STATUS: ${want.slice(7)}`);
    const since = nowNs();
    await sleep(1000);
    const pings = notesSince(since).filter((n) => n === 'WATCHDOG=1').length;
    t.ok(pings >= 4 && pings <= 6, `WATCHDOG=1 every WATCHDOG_USEC/2 = 200 ms: ${pings} in 1 s`);
  });

  await t.test('logs: one JSON line per ownership change, with its reason', async (t) => {
    const changes = log('h1').filter((l) => l.msg.startsWith('owner of '));
    for (const [ip, owner] of Object.entries(status.floatingIPs)) {
      const line = changes.find((l) => l['ip'] === ip);
      t.ok(line, `a line for ${ip}`);
      t.equal(line?.['to'], owner);
      t.match(String(line?.['reason']), /^(assigned|kept)$/);
      t.equal(line?.msg, `owner of ${ip}: (none) -> ${owner} (${String(line?.['reason'])})`);
    }
  });

  await t.test('metrics: Prometheus text on 127.0.0.1, scraped over HTTP', async (t) => {
    const { samples: m, text, contentType } = await scrape(lab, 'h1', METRICS_PORT);
    t.match(contentType, /^text\/plain; version=0\.0\.4/, 'the Prometheus text format');
    for (const [ip, owner] of Object.entries(status.floatingIPs)) {
      const gateway = ip === CLUSTER_FIPS.reports ? 'secondary' : 'primary';
      t.equal(
        m.get(`egress_natd_floating_ip_owner{ip="${ip}",gateway="${gateway}",owner="${owner}"}`),
        1,
        `owner of ${ip}: ${owner}`,
      );
      t.equal(
        m.get(`egress_natd_floating_ip_held{ip="${ip}"}`),
        owner === 'h1' ? 1 : 0,
        `h1 ${owner === 'h1' ? 'holds' : 'does not hold'} ${ip}`,
      );
    }
    for (const n of names) t.equal(m.get(`egress_natd_node_up{node="${n}"}`), 1, `${n} Up`);
    t.equal(m.get('egress_natd_node_eligible{node="h3"}'), 1);
    t.equal(m.get('egress_natd_ready{node="h1"}'), 1);
    t.ok(
      m.get('egress_natd_heartbeats_sent_total')! > 20,
      `heartbeats sent: ${m.get('egress_natd_heartbeats_sent_total')}`,
    );
    t.ok(
      m.get('egress_natd_heartbeats_received_total')! > 50,
      `heartbeats received: ${m.get('egress_natd_heartbeats_received_total')}`,
    );
    for (const reason of ['bad-mac', 'replay', 'truncated', 'other-cluster'])
      t.equal(
        m.get(`egress_natd_heartbeats_rejected_total{reason="${reason}"}`),
        0,
        `rejected (${reason}) is exported at 0`,
      );
    t.ok(m.get('egress_natd_reconcile_duration_seconds_count{result="ok"}')! >= 1, 'reconcile durations are observed');
    t.equal(m.get('egress_natd_reconcile_errors_total'), 0);
    const held = Object.values(status.floatingIPs).filter((o) => o === 'h1').length;
    t.equal(m.get('egress_natd_gratuitous_arp_total'), held, 'one announcement per IP it took');
    t.equal(m.get('egress_natd_config_drift'), 0);
    t.equal(
      m.get(`egress_natd_config_info{node="h2",digest="${status.configDigests['h2']}"}`),
      1,
      "each node's config digest",
    );
    t.match(text, /# HELP egress_natd_failovers_total /);
    t.ok(m.get('process_resident_memory_bytes')! > 10e6, "and the process's own (RSS, CPU, start time)");
    // Bound to loopback: another host on the segment cannot scrape it.
    const fromRouter = await lab.sh(
      'r',
      `timeout 2 bash -c 'exec 3<>/dev/tcp/${SUBNET_PREFIX}.1/${METRICS_PORT}' && echo open || echo closed`,
      { allowFail: true },
    );
    t.equal(fromRouter.stdout.trim(), 'closed', 'not reachable from the segment');
  });

  const shop = await startProber(lab, 'c1', ECHO.inPolicy);
  const batch = await startProber(lab, 'c2', ECHO.inPolicy);
  t.teardown(async () => {
    await shop.stop();
    await batch.stop();
  });
  await waitForFlow(shop.log, SHOP);
  await waitForFlow(batch.log, BATCH);
  const ruleset = async (h: string) =>
    (
      await lab.sh(
        h,
        // Counters count the traffic that flows meanwhile: their values are left out.
        "nft list table inet egress_natd | sed -E 's/packets [0-9]+ bytes [0-9]+/packets - bytes -/'; " +
          'ip rule; ip -o addr show; ip route show table all | grep -v "^local\\|^broadcast"',
      )
    ).stdout;

  await t.test('reload with a bad file: every error with FILE:LINE:COL, nothing changes, traffic flows', async (t) => {
    const bad = base
      .replace('noGateway: drop', 'noGateway: sideways')
      .replace('cidrs: [10.10.2.0/24]', 'cidrs: [10.10.2.1/24]')
      .replace('  - name: batch\n    sources:', '  - name: batch\n    colour: blue\n    sources:');
    writeFileSync(cfg('h1'), bad);
    const before = await ruleset('h1');
    const since = nowNs();
    lab.signalDaemon('h1', 'SIGHUP');
    await waitUntil('the reload to be rejected', async () => log('h1').some((l) => /^reload rejected/.test(l.msg)));
    const errors = log('h1')
      .filter((l) => l.level >= 50 && l.msg.startsWith(`${cfg('h1')}:`))
      .map((l) => l.msg);
    t.equal(errors.length, 3, `three errors logged:\n${errors.join('\n')}`);
    for (const e of errors)
      t.match(
        e,
        new RegExp(`^${cfg('h1').replaceAll('.', '\\.')}:\\d+:\\d+: error: `),
        'FILE:LINE:COL: error: MESSAGE',
      );
    t.match(errors.join('\n'), /noGateway/);
    t.match(errors.join('\n'), /colour/);
    t.match(errors.join('\n'), /host bits/);
    await waitUntil('READY=1 after RELOADING=1', async () => notesSince(since).some((n) => n === 'READY=1'));
    const told = toldSince(since);
    t.match(told[0], /^RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=reloading /, 'RELOADING=1 (with MONOTONIC_USEC) first');
    t.ok(told.indexOf('READY=1') > 0, 'then READY=1');
    t.equal(await ruleset('h1'), before, 'nft table, rules, addresses and routes unchanged');
    const s = await lab.status('h1');
    t.equal(s.configDigests['h1'], status.configDigests['h1'], 'still the old config');
    t.same(s.counters.reloads, { ok: 0, failed: 1 });
    await sleep(300);
    for (const [p, ip] of [
      [shop, SHOP],
      [batch, BATCH],
    ] as const) {
      const o = outage(p.log(), since, ip);
      t.same(o.ips, [ip], `${ip}: only its IP`);
      t.equal(o.lost, 0, `${ip}: none of ${o.sent} requests lost`);
    }
  });

  await t.test(
    'reload with a good file on one node: only the difference, traffic flows, drift is reported',
    async (t) => {
      const next = grown(base);
      writeFileSync(cfg('h1'), next);
      const owner = status.floatingIPs[SHOP]!;
      const objects = async () =>
        (await lab.sh(owner, `ip -o link show type macvlan; ip rule; nft -a list chain inet egress_natd postrouting`))
          .stdout;
      const before = await objects();
      const since = nowNs();
      lab.signalDaemon('h1', 'SIGHUP');
      await waitUntil('the reload to be applied', async () => log('h1').some((l) => /^reloaded /.test(l.msg)));
      await waitUntil('READY=1 after the reload', async () => notesSince(since).includes('READY=1'));
      t.match(toldSince(since)[0], /^RELOADING=1\n/);
      const reloaded = log('h1').find((l) => /^reloaded /.test(l.msg))!;
      t.same(reloaded['floatingIPsAdded'], [AUDIT], 'the log says what changed');
      t.same(reloaded['policiesAdded'], ['audit']);
      await waitUntil('h1 to warn about config drift', async () =>
        log('h1').some((l) => l.msg.startsWith('config differs across the cluster')),
      );
      const h2 = await lab.status('h2');
      t.not(h2.configDigests['h1'], h2.configDigests['h2'], 'status on h2 shows that h1 runs another config');
      t.equal(h2.configDigests['h3'], h2.configDigests['h2']);
      if (owner === 'h1') t.pass('(h1 owns the shop IP itself)');
      else t.equal(await objects(), before, `the shop IP's owner (${owner}) was not touched`);

      // The rest of the cluster follows, all at once.
      for (const h of names.slice(1)) writeFileSync(cfg(h), next);
      for (const h of names.slice(1)) lab.signalDaemon(h, 'SIGHUP');
      await waitUntil('every node to run the new config', async () => {
        const s = await lab.status('h1');
        return new Set(Object.values(s.configDigests)).size === 1 && s.configDigests['h1'] === s.configDigests['h2'];
      });
      await waitUntil('h1 to see the configs agree again', async () =>
        log('h1').some((l) => l.msg === 'configs agree again across the cluster'),
      );
      const warnings = log('h1').filter((l) => l.msg.startsWith('config differs across the cluster'));
      t.equal(warnings.length, 1, 'h1 warned once, not per node or per heartbeat');
      status = await settled(lab, names);
      const steering = names.find((h) => status.floatingIPs[SHOP] !== h)!;
      t.match(
        (await lab.sh(steering, 'ip route show table 7601')).stdout,
        `via ${SHOP}`,
        `the shop IP kept mark index 1 on ${steering} (file order would have made it 2)`,
      );
      t.ok(status.floatingIPs[AUDIT], `the new IP has an owner: ${status.floatingIPs[AUDIT]}`);
      t.equal(await lab.probe('c2', ECHO.other), AUDIT, 'the new policy steers c2 to the new IP');
      const end = nowNs();
      await sleep(300);
      for (const [p, ip] of [
        [shop, SHOP],
        [batch, BATCH],
      ] as const) {
        const o = outage(p.log(), since, ip);
        t.same(o.ips, [ip], `${ip}: only its IP through both reloads`);
        t.equal(o.lost, 0, `${ip}: none of ${o.sent} requests lost`);
        t.ok(
          longestGap(p.log(), since, end) < 100,
          `${ip}: longest gap between answers ${longestGap(p.log(), since, end).toFixed(1)} ms`,
        );
      }
      const m = (await scrape(lab, 'h1', METRICS_PORT)).samples;
      t.equal(m.get('egress_natd_reloads_total{result="ok"}'), 1);
      t.equal(m.get('egress_natd_reloads_total{result="failed"}'), 1);
      t.equal(m.get('egress_natd_config_drift'), 0);
    },
  );

  await t.test('SIGTERM: STOPPING=1, then the daemon hands over, parks the host and exits 0', async (t) => {
    const since = nowNs();
    const held = Object.entries(status.floatingIPs)
      .filter(([, o]) => o === 'h1')
      .map(([ip]) => ip);
    const code = await lab.stopDaemon('h1', 'SIGTERM');
    t.equal(code, 0);
    t.match(toldSince(since)[0], /^STOPPING=1\nSTATUS=stopping: /);
    const stopped = log('h1').find((l) => l.msg.startsWith('stopped: '));
    t.equal(stopped?.['steering'], 'parked', `h1 logged: ${stopped?.msg}`);
    t.same(await lab.sh('h1', `ip -o link show type macvlan`).then((r) => r.stdout), '', 'no floating IP left on h1');
    for (const ip of held) {
      const moved = await waitUntil(`h2 to log the move of ${ip}`, async () =>
        log('h2').find((l) => l['ip'] === ip && l['from'] === 'h1'),
      );
      t.match(
        moved.msg,
        new RegExp(`^owner of ${ip.replaceAll('.', '\\.')}: h1 -> h\\d \\(\\w+\\)$`),
        `h2 logged: ${moved.msg}`,
      );
    }
  });
});
