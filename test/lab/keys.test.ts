import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DgramSocket } from 'node-unix-socket';
import {
  CLUSTER_CONTAINERS,
  CLUSTER_FIPS,
  CLUSTER_HOSTS,
  labSite,
  settled,
  siteConfig,
  waitUntil,
} from '../../lab/cluster.js';
import { ECHO, Lab } from '../../lab/lab.js';
import { scrape } from '../../lab/scrape.js';
import { nowNs, outage, startProber, waitForFlow } from '../../lab/traffic.js';

// Cluster keys on the real kernel: a rolling key rotation under traffic, host by host with
// SIGHUP, through the three steps of README.md "Key rotation"; and a host started with a
// wrong key. Each host has its own key file (beside its own copy of the same config).

const FIPS = Object.values(CLUSTER_FIPS);
const { shop: SHOP } = CLUSTER_FIPS;
const METRICS_PORT = 9607;
const newKey = () => randomBytes(48).toString('base64');

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [k: string]: unknown;
}

t.test('keys', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const names = lab.hosts.map((h) => h.name);
  const dir = (h: string) => join(lab.dir, `etc-${h}`);
  const cfg = (h: string) => join(dir(h), 'config.yaml');
  // The same text on every host (the same digest): keyFile is relative to the config.
  const text = siteConfig({ ...labSite(lab), keyFile: 'cluster.key' });
  /** Writes a host's key file as an operator's copy would land: whole, at once. */
  const setKeys = (h: string, keys: string[]) => {
    const tmp = join(dir(h), 'cluster.key.new');
    writeFileSync(tmp, keys.map((k) => `${k}\n`).join(''), { mode: 0o600 });
    renameSync(tmp, join(dir(h), 'cluster.key'));
  };
  const log = (h: string): LogLine[] =>
    readFileSync(lab.daemonLog(h), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogLine);
  const OLD = newKey();
  for (const h of names) {
    mkdirSync(dir(h));
    writeFileSync(cfg(h), text);
    setKeys(h, [OLD]);
  }
  await Promise.all(names.map((h) => lab.startDaemon(h, cfg(h))));
  let status = await settled(lab, names);

  await t.test('a rolling key rotation, host by host with SIGHUP: one holder per IP throughout', async (t) => {
    const NEW = newKey();
    const probe = await startProber(lab, 'c1', ECHO.inPolicy);
    t.teardown(() => probe.stop());
    await waitForFlow(probe.log, SHOP);
    const logLength = Object.fromEntries(names.map((h) => [h, log(h).length]));
    const dropsBefore = await Promise.all(names.map(async (h) => (await lab.status(h)).counters.dropped['bad-mac']));
    // Sample the holders of every IP, as often as the lab answers, until the rotation ends.
    const samples: string[][][] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) samples.push(await Promise.all(FIPS.map((ip) => lab.holders(ip))));
    })();
    const since = nowNs();
    for (const keys of [[OLD, NEW], [NEW, OLD], [NEW]]) {
      for (const h of names) {
        const reloads = log(h).filter((l) => l.msg.startsWith('reloaded ')).length;
        setKeys(h, keys);
        lab.signalDaemon(h, 'SIGHUP');
        await waitUntil(
          `${h} to reload`,
          async () => log(h).filter((l) => l.msg.startsWith('reloaded ')).length > reloads,
        );
        await sleep(500); // longer than a Down interval (300 ms): a host cut off by the new key would be Down by now
      }
    }
    sampling = false;
    await sampler;
    const o = outage(await probe.stop(), since, SHOP);
    t.comment(`${samples.length} samples of the holders of ${FIPS.length} IPs; ${o.lost} of ${o.sent} requests lost`);
    const bad = samples.filter((s) => s.some((holders) => holders.length !== 1));
    t.same(bad.slice(0, 3), [], `exactly one holder per IP in every one of ${samples.length} samples`);
    const changes = names.flatMap((h) =>
      log(h)
        .slice(logLength[h])
        .filter((l) => l.msg.startsWith('owner of ') || l.msg.includes(' is Down'))
        .map((l) => `${String(l['time'])} ${h}: ${l.msg}`),
    );
    t.same(changes, [], 'no ownership change logged (nor any node Down)');
    const after = await Promise.all(names.map(async (h) => (await lab.status(h)).counters.dropped['bad-mac']));
    t.same(
      after.map((n, i) => n - dropsBefore[i]!),
      names.map(() => 0),
      'no heartbeat failed authentication on any host',
    );
    t.equal(o.lost, 0, 'no request lost');
    const now = await settled(lab, names);
    t.same(now.floatingIPs, status.floatingIPs, 'the owners are those from before the rotation');
    status = now;
  });

  await t.test('a host started with a wrong key: says so, takes nothing; the others keep theirs', async (t) => {
    const victim = 'h4'; // the worker that holds the reports IP (secondary gateway: anyone may take it)
    t.equal(status.floatingIPs[CLUSTER_FIPS.reports], victim, 'h4 holds the reports IP before');
    await lab.stopDaemon(victim);
    status = await settled(lab, ['h1', 'h2', 'h3']);
    t.not(status.floatingIPs[CLUSTER_FIPS.reports], victim, 'it moved to another host when h4 stopped');
    setKeys(victim, [newKey()]);
    const notify = join(lab.dir, 'notify-h4.sock');
    const notes: string[] = [];
    const systemd = new DgramSocket();
    systemd.bind(notify);
    systemd.on('data', (buf: Buffer) => notes.push(buf.toString()));
    t.teardown(() => systemd.close());
    let doubled = 0;
    let samples = 0;
    let took = 0;
    await lab.startDaemon(victim, cfg(victim), [], { NOTIFY_SOCKET: notify });
    const end = Date.now() + 4000; // two listening periods
    while (Date.now() < end) {
      const holders = await Promise.all(FIPS.map((ip) => lab.holders(ip)));
      samples++;
      doubled += holders.filter((h) => h.length !== 1).length;
      took += holders.filter((h) => h.includes(victim)).length;
    }
    t.equal(took, 0, `h4 took no IP (${samples} samples)`);
    t.equal(doubled, 0, 'exactly one holder per IP throughout');
    const own = await lab.status(victim);
    t.same(own.authentication, { failing: ['h1', 'h2', 'h3'], outvoted: true }, "h4's status: outvoted");
    t.same((await settled(lab, ['h1', 'h2', 'h3'])).floatingIPs, status.floatingIPs, 'the others keep their IPs');
    for (const h of ['h1', 'h2', 'h3']) {
      const s = await lab.status(h);
      t.same(s.authentication, { failing: ['h4'], outvoted: false }, `${h}'s status names h4`);
      const warned = log(h).filter((l) => l.msg.startsWith('heartbeats from h4 fail authentication'));
      t.equal(warned.length, 1, `${h} warned once, not per datagram (${s.counters.authFailures['h4']} bad MACs)`);
    }
    t.equal(
      log(victim).filter((l) => l.msg.startsWith('more peers fail authentication')).length,
      1,
      'h4 warned once that its key is probably wrong',
    );
    const line = notes.filter((n) => n.startsWith('STATUS=')).at(-1);
    t.match(line, /authentication fails for h1, h2, h3 .*taking no IP/, `h4's STATUS line: ${line}`);
    const m = (await scrape(lab, 'h1', METRICS_PORT)).samples;
    t.equal(m.get('egress_natd_peer_auth_failing{node="h4"}'), 1, 'h1: egress_natd_peer_auth_failing{node="h4"} 1');
    t.ok((m.get('egress_natd_peer_auth_failures_total{node="h4"}') ?? 0) > 10, 'h1: peer_auth_failures_total counts');
    t.equal((await scrape(lab, victim, METRICS_PORT)).samples.get('egress_natd_auth_outvoted'), 1, 'h4: outvoted 1');
  });
});
