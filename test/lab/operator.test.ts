import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { policiesYaml } from '../../lab/config.js';
import { CLUSTER_CONTAINERS, CLUSTER_FIPS, CLUSTER_HOSTS, clusterConfig, settled } from '../../lab/cluster.js';
import { ECHO, Lab, net24, SUBNET_PREFIX, type DaemonStatus } from '../../lab/lab.js';
import { scrape } from '../../lab/scrape.js';
import { cutOff, nowNs, startProber, type ProbeLog } from '../../lab/traffic.js';
import type { Traffic } from '../../src/daemon/traffic.js';

// The operator's view on the real kernel: each policy's state with its reason, what
// flows per floating IP and per policy (the kernel's named counters) against what a
// prober sent, and the failover history with the outage the new owner measured; in
// `status`, `egress list` and the metrics.

const { shop: SHOP, batch: BATCH } = CLUSTER_FIPS;
const SPARE = `${SUBNET_PREFIX}.103`;
const METRICS_PORT = 9607;
/** Connections SNATed on an owner for the heartbeat check: as many as the scrape bench's. */
const LOADED_CONNECTIONS = 100_000;
/** Packets a prober's requests may differ by from a counter: one in flight at each end. */
const SLACK = 2;

/** Runs a prober (one UDP request per new connection) for a while; what it sent: packets and IP bytes. */
async function send(
  lab: Lab,
  from: string,
  dest: string,
): Promise<{ packets: number; bytes: number; answers: string[] }> {
  const probe = await startProber(lab, from, dest, 10);
  await new Promise((r) => setTimeout(r, 1000));
  const log: ProbeLog = await probe.stop();
  await new Promise((r) => setTimeout(r, 300)); // the last ones reach the counters
  const seqs = [...log.sent.keys()];
  // IPv4 (20) + UDP (8) headers, and the sequence number as text.
  return {
    packets: seqs.length,
    bytes: seqs.reduce((sum, n) => sum + 28 + String(n).length, 0),
    answers: log.replies.map((r) => r.ip),
  };
}

/**
 * The cluster config, plus a gateway whose only candidate (h5) is a node of the config
 * that never runs, and a policy (batch to the other service) that uses it; and a policy
 * that selects h3's own address.
 */
function operatorConfig(lab: Lab): string {
  const spare = policiesYaml([
    { name: 'spare', from: { app: 'batch' }, to: net24(ECHO.other), gateway: 'spare', egressIP: SPARE },
    // h3's own address, to anywhere: what h3 itself sends (not its containers).
    { name: 'hosts', from: { cidrs: [`${SUBNET_PREFIX}.3/32`] }, to: '0.0.0.0/0', gateway: 'primary', egressIP: BATCH },
  ]);
  return `${clusterConfig(lab).replace(
    '\ngateways:\n',
    `
  - name: h5
    address: ${SUBNET_PREFIX}.5/24
    role: worker
    labels: { spare: "yes" }
gateways:
  - name: spare
    floatingIPs: [${SPARE}]
    nodeSelector: { spare: "yes" }
`,
  )}${spare}\n`;
}

t.test("the operator's view", async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, operatorConfig(lab));
  const names = lab.hosts.map((h) => h.name);
  await Promise.all(names.map((h) => lab.startDaemon(h, cfg)));
  let status: DaemonStatus = await settled(lab, names, 15_000);
  const metrics = async (host: string) => (await scrape(lab, host, METRICS_PORT)).samples;

  await t.test('a policy whose gateway has no live candidate reads NoGateway, with why', async (t) => {
    const spare = status.policies['spare']!;
    t.equal(spare.state, 'NoGateway');
    t.equal(spare.gateway, null);
    t.match(spare.reason, `no live candidate for ${SPARE} (h5 Down)`);
    t.equal(status.policies['shop']!.state, 'Active', 'a policy whose IP has an owner is Active');
    t.equal(await lab.probe('c2', ECHO.other, { timeoutS: 1 }), undefined, 'and its traffic is indeed dropped');
    const m = await metrics('h4');
    t.equal(m.get('egress_natd_policy_state{policy="spare",state="NoGateway"}'), 1, 'the metric says NoGateway');
    t.equal(m.get('egress_natd_policy_state{policy="spare",state="Active"}'), 0);
    t.equal(m.get('egress_natd_policy_state{policy="shop",state="Active"}'), 1);
    t.equal(m.get('egress_natd_policy_state{policy="shop",state="NoGateway"}'), 0);
    const text = (await lab.egress('h4', ['status', '-o', 'text'])).stdout;
    t.match(text, new RegExp(`\\nspare\\s+NoGateway\\s+${SPARE.replaceAll('.', '\\.')}\\s+-\\s+no live candidate`));
  });

  await t.test('counters grow by what a prober sent', async (t) => {
    const owner = status.floatingIPs[SHOP]!;
    const traffic = async (h: string): Promise<Traffic> => (await lab.status(h)).traffic!;
    const before = { h3: await traffic('h3'), owner: await traffic(owner), h4: await traffic('h4') };
    const sent = await send(lab, 'c1', ECHO.inPolicy);
    t.ok(sent.packets > 0, `c1 sent ${sent.packets} requests`);
    t.ok(sent.answers.length > 0 && sent.answers.every((a) => a === SHOP), `answered, all with ${SHOP}`);
    const after = { h3: await traffic('h3'), owner: await traffic(owner) };
    const near = (got: number, want: number, per: number, what: string) =>
      t.ok(Math.abs(got - want) <= SLACK * per, `${what}: ${got}, sent ${want}`);
    const shop = (x: Traffic) => x.policies['shop']!;
    near(
      shop(after.h3).packets - shop(before.h3).packets,
      sent.packets,
      1,
      'h3 (c1 runs behind it): policy shop packets',
    );
    near(shop(after.h3).bytes - shop(before.h3).bytes, sent.bytes, 32, 'h3: policy shop bytes');
    const ip = (x: Traffic) => x.egressIPs[SHOP]!;
    near(ip(after.owner).packets - ip(before.owner).packets, sent.packets, 1, `${owner} (the owner): ${SHOP} packets`);
    near(ip(after.owner).bytes - ip(before.owner).bytes, sent.bytes, 32, `${owner}: ${SHOP} bytes`);
    near(
      ip(after.owner).connections - ip(before.owner).connections,
      sent.packets,
      1,
      `${owner}: ${SHOP} connections (each request is one)`,
    );
    t.equal(
      shop(after.owner).packets,
      shop(before.owner).packets,
      'the owner does not count the relayed policy traffic again',
    );
    t.equal(ip(after.h3).packets, ip(before.h3).packets, 'h3 sends it to the owner: nothing leaves h3 with the IP');

    const list = (await lab.egress('h3', ['egress', 'list'])).stdout;
    const row = list.split('\n').find((l) => l.startsWith('10.10.1.0/24') && l.includes(' shop '));
    t.match(
      row,
      new RegExp(`\\s${shop(after.h3).packets}\\s+${shop(after.h3).bytes}$`),
      "egress list shows the policy's counts",
    );
    const m = await metrics(owner);
    t.ok(m.get(`egress_natd_egress_ip_packets_total{ip="${SHOP}"}`)! >= ip(after.owner).packets, 'and the metrics');

    // Each request was a connection from a new source port: all toward one destination.
    const ports = (await lab.status(owner)).snatPorts![SHOP]!;
    near(ports.connections, sent.packets, 1, `${owner}: connections tracked with ${SHOP} as source`);
    t.equal(ports.busiest?.destination, `${ECHO.inPolicy}:7/udp`, 'the busiest destination: the echo server');
    near(ports.busiest!.ports, sent.packets, 1, 'ports it takes');
    t.equal(ports.warning, undefined, 'far from the port range: no warning');
    const after2 = await metrics(owner);
    t.equal(
      after2.get(`egress_natd_snat_connections{ip="${SHOP}"}`),
      ports.connections,
      'the metrics show the last check',
    );
    t.equal(after2.get(`egress_natd_snat_port_usage_ratio{ip="${SHOP}"}`), ports.busiest!.usage);
    t.same((await lab.status('h3')).snatPorts, {}, 'a node that holds no IP has no SNAT ports to watch');

    // Nobody may own the spare IP: c2's traffic for it is dropped on its own host, and counted there.
    const dropped = await send(lab, 'c2', ECHO.other);
    t.same(dropped.answers, [], 'c2 to the other service: no answer');
    const h4 = await traffic('h4');
    near(
      h4.egressIPs[SPARE]!.noGatewayDropped - before.h4.egressIPs[SPARE]!.noGatewayDropped,
      dropped.packets,
      1,
      `h4: dropped for ${SPARE} (no gateway)`,
    );
    near(h4.policies['spare']!.packets - before.h4.policies['spare']!.packets, dropped.packets, 1, 'h4: policy spare');
    t.equal(
      (await metrics('h4')).get(`egress_natd_no_gateway_dropped_total{ip="${SPARE}"}`),
      h4.egressIPs[SPARE]!.noGatewayDropped,
      'in the metrics too',
    );
  });

  await t.test('counting 100,000 SNATed connections does not hold up heartbeats', async (t) => {
    const owner = status.floatingIPs[SHOP]!;
    const stalls = async () => (await metrics(owner)).get('egress_natd_event_loop_stalls_total') ?? 0;
    const downs = () =>
      names.reduce((n, h) => n + (readFileSync(lab.daemonLog(h), 'utf8').match(/ is Down: /g)?.length ?? 0), 0);
    // One datagram to each of 100,000 (address, port) pairs: a connection each on the owner, SNATed to the IP.
    const perAddress = LOADED_CONNECTIONS / 2;
    await lab.sh(
      'c1',
      `python3 -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b'x', (d, p)) for d in ('${ECHO.inPolicy}', '203.0.113.12') for p in range(1024, ${1024 + perAddress})]"`,
    );
    // Sending them loads both cores: the stall watch may count that second; it is not what this test is about.
    await new Promise((r) => setTimeout(r, 2100));
    const [stallsBefore, downsBefore] = [await stalls(), downs()];
    let counted = 0;
    for (let i = 0; i < 3; i++) counted = (await lab.status(owner)).snatPorts![SHOP]!.connections;
    await new Promise((r) => setTimeout(r, 1100)); // the stall watch reads its samples once a second
    t.ok(counted >= LOADED_CONNECTIONS * 0.99, `status counted ${counted} connections on ${owner}`);
    t.equal(await stalls(), stallsBefore, `${owner}: no event loop stall while it counted them, three times`, {
      log: readFileSync(lab.daemonLog(owner), 'utf8').match(/.*event loop stalled.*/g),
    });
    t.equal(downs(), downsBefore, 'no node marked Down meanwhile');
    // The UDP entries expire in 30 s on their own; the failover below does not wait for them.
    await lab.sh(owner, `conntrack -D -p udp --reply-dst ${SHOP} >/dev/null 2>&1 || true`);
  });

  await t.test("a source CIDR with a node's own address selects what the node itself sends", async (t) => {
    t.not(status.floatingIPs[BATCH], 'h3', 'another node owns the IP');
    t.equal(await lab.probe('h3', ECHO.other), BATCH, `h3 leaves with ${BATCH}`);
    t.equal(await lab.probe('h3', ECHO.inPolicy), BATCH, 'to any destination');
    t.equal(await lab.probe('h4', ECHO.other), '192.168.1.4', 'another node is not selected');
    await new Promise((r) => setTimeout(r, 1000));
    const after = await lab.status('h1');
    t.equal(after.nodes['h3'], 'Up', "h3's heartbeats (multicast, its own segment) are not steered: it stays Up");
    t.equal(after.policies['hosts']!.state, 'Active');
  });

  await t.test('a failover is in the history, with the outage the new owner measured', async (t) => {
    const victim = status.floatingIPs[SHOP]!;
    const survivors = names.filter((h) => h !== victim);
    const beforeCut = Date.now();
    const cut = await cutOff(lab, victim);
    status = await settled(lab, survivors, 15_000);
    const elapsedMs = Number(nowNs() - cut) / 1e6;
    const taker = status.floatingIPs[SHOP]!;
    t.not(taker, victim, `${SHOP} moved from ${victim} to ${taker}`);

    const last = (s: DaemonStatus) => s.history.filter((r) => r.ip === SHOP).at(-1)!;
    const mine = last(await lab.status(taker));
    t.has(mine, { ip: SHOP, from: victim, to: taker, cause: 'owner-down' }, 'the taker recorded the move and why');
    t.type(mine.outageMs, 'number', 'with the outage it measured');
    t.ok(
      mine.outageMs! >= 0 && mine.outageMs! <= elapsedMs,
      `${mine.outageMs} ms, within the ${elapsedMs.toFixed(0)} ms since the cut`,
    );
    t.ok(Date.parse(mine.at) >= beforeCut, `at ${mine.at}, after the cut`);
    for (const h of survivors.filter((x) => x !== taker)) {
      const seen = last(await lab.status(h));
      t.has(seen, { ip: SHOP, from: victim, to: taker, cause: 'owner-down', outageMs: null }, `${h} saw the same move`);
    }
    // The histogram holds exactly the outages each survivor's history shows as its own
    // (a loaded machine may have moved IPs before the cut too: they count on both sides).
    for (const h of survivors) {
      const own = (await lab.status(h)).history.filter((r) => r.to === h && r.outageMs !== null);
      const m = await metrics(h);
      t.equal(
        m.get('egress_natd_takeover_duration_seconds_count') ?? 0,
        own.length,
        `${h}: one observation per outage`,
      );
      t.equal(
        Math.round((m.get('egress_natd_takeover_duration_seconds_sum') ?? 0) * 1000),
        own.reduce((sum, r) => sum + r.outageMs!, 0),
        `${h}: of the outages its history shows`,
      );
    }
    const text = (await lab.egress(taker, ['status', '-o', 'text'])).stdout;
    const ip = SHOP.replaceAll('.', '\\.');
    t.match(
      text,
      new RegExp(`${ip}\\s+${victim}\\s+${taker}\\s+owner-down\\s+assigned\\s+${mine.outageMs} ms`),
      'and in text',
    );
  });
});
