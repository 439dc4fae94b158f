import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { policiesYaml } from '../../lab/config.js';
import { CLUSTER_CONTAINERS, CLUSTER_FIPS, CLUSTER_HOSTS, clusterConfig, settled } from '../../lab/cluster.js';
import { ECHO, Lab, net24, SUBNET_PREFIX, type DaemonStatus } from '../../lab/lab.js';
import { scrape } from '../../lab/scrape.js';
import { cutOff, nowNs } from '../../lab/traffic.js';

// The operator's view on the real kernel: the failover history with the outage the new
// owner measured, each policy's state with its reason, in `status` and the metrics.

const { shop: SHOP } = CLUSTER_FIPS;
const SPARE = `${SUBNET_PREFIX}.103`;
const METRICS_PORT = 9607;

/**
 * The cluster config, plus a gateway whose only candidate (h5) is a node of the config
 * that never runs, and a policy (batch to the other service) that uses it.
 */
function operatorConfig(lab: Lab): string {
  const spare = policiesYaml([
    { name: 'spare', from: { app: 'batch' }, to: net24(ECHO.other), gateway: 'spare', egressIP: SPARE },
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

  await t.test('a failover is in the history, with the outage the new owner measured', async (t) => {
    const victim = status.floatingIPs[SHOP]!;
    const survivors = names.filter((h) => h !== victim);
    for (const h of survivors)
      t.equal(
        (await metrics(h)).get('egress_natd_takeover_duration_seconds_count'),
        undefined,
        `${h}: no takeover yet`,
      );
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
    t.ok(Date.parse(mine.at) >= Date.now() - elapsedMs - 1000, 'at the time of the cut');
    for (const h of survivors.filter((x) => x !== taker)) {
      const seen = last(await lab.status(h));
      t.has(seen, { ip: SHOP, from: victim, to: taker, cause: 'owner-down', outageMs: null }, `${h} saw the same move`);
    }
    const m = await metrics(taker);
    t.equal(m.get('egress_natd_takeover_duration_seconds_count'), 1, 'one takeover in the histogram');
    t.equal(
      Math.round(m.get('egress_natd_takeover_duration_seconds_sum')! * 1000),
      mine.outageMs,
      'of the outage the history shows',
    );
    const text = (await lab.egress(taker, ['status', '-o', 'text'])).stdout;
    const ip = SHOP.replaceAll('.', '\\.');
    t.match(text, new RegExp(`${ip}\\s+${victim}\\s+${taker}\\s+owner-down\\s+${mine.outageMs} ms`), 'and in text');
  });
});
