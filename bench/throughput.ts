import { join } from 'node:path';
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLUSTER_CONTAINERS, CLUSTER_FIPS, CLUSTER_HOSTS, settled, waitUntil } from '../lab/cluster.js';
import { ECHO, Lab } from '../lab/lab.js';
import { benchDeps } from './deps.js';
import {
  handMade,
  iperf,
  manyPolicies,
  measuredPolicy,
  startIperfServer,
  writeConfig,
  type IperfResult,
} from './throughput-lab.js';
import { median } from './unplanned.js';

// Throughput through a floating IP: iperf3 from c1 (behind h3) to the router, through the
// owner of the IP, which SNATs it. Three ways on one lab, alternated round by round:
// egress-natd with one policy, egress-natd with 1,000 policies (the flow matches the last),
// and the same job by hand (a static route on c1's host, the IP on the owner's eth0, one
// snat rule). A round is one run of each; the ratios are per round, then the median.

const ROUNDS = Number(process.env.THROUGHPUT_RUNS || 5);
const SECONDS = 2;
const OMIT = 1;
const POLICIES = 1000;
const FIPS = [CLUSTER_FIPS.shop, CLUSTER_FIPS.batch] as const;
type Mode = 'ours' | 'ours1000' | 'hand';

export async function throughputSection(): Promise<string> {
  benchDeps();
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  try {
    return await measure(lab);
  } finally {
    await lab.destroy();
  }
}

async function measure(lab: Lab): Promise<string> {
  const c1 = lab.containers.find((c) => c.name === 'c1')!;
  const names = lab.hosts.map((h) => h.name);
  const cfg = join(lab.dir, 'config.yaml');
  const one = [measuredPolicy(c1.cidr, FIPS[0])];
  const many = manyPolicies(POLICIES, one[0]!, FIPS);
  const configs = { ours: one, ours1000: many };
  await startIperfServer(lab);
  const results: Record<Mode, IperfResult[]> = { ours: [], ours1000: [], hand: [] };
  let owner = 'h1';
  let daemons = false;

  /** The daemons run with `mode`'s config (started, or reloaded if they run) and the flow leaves with the IP. */
  const ours = async (mode: 'ours' | 'ours1000') => {
    writeConfig(lab, cfg, FIPS, configs[mode]);
    if (daemons) for (const h of names) lab.signalDaemon(h, 'SIGHUP');
    else await Promise.all(names.map((h) => lab.startDaemon(h, cfg)));
    daemons = true;
    await waitUntil(
      `every daemon to run ${configs[mode].length} policies`,
      async () =>
        (await Promise.all(names.map((h) => lab.status(h)))).every(
          (s) => Object.keys(s.policies).length === configs[mode].length,
        ),
      30_000,
      200,
    );
    owner = await steadyOwner();
  };
  /** The owner once the cluster has settled and stayed so for half a second (a fresh cluster may still move an IP). */
  const steadyOwner = async (): Promise<string> => {
    for (;;) {
      const a = (await settled(lab, names, 30_000, 100)).floatingIPs;
      await sleep(500);
      const b = (await settled(lab, names, 30_000, 100)).floatingIPs;
      if (JSON.stringify(a) === JSON.stringify(b)) return b[FIPS[0]]!;
    }
  };
  const takeovers = async () =>
    daemons ? (await Promise.all(names.map((h) => lab.status(h)))).reduce((n, s) => n + s.counters.takeovers, 0) : 0;
  const stopOurs = async () => {
    await Promise.all(names.map((h) => lab.stopDaemon(h, 'SIGTERM')));
    await Promise.all(names.map((h) => lab.egress(h, ['release'])));
    daemons = false;
  };
  const run = async (mode: Mode) => {
    // A run during which an IP moved measured a failover, not the path: it is run again.
    for (let attempt = 1; ; attempt++) {
      await waitUntil(`c1 to leave with ${FIPS[0]}`, async () => (await lab.probe('c1', ECHO.inPolicy)) === FIPS[0]);
      const moved = await takeovers();
      const r = await iperf(lab, 'c1', SECONDS, OMIT);
      if ((await takeovers()) === moved || attempt === 3) return record(mode, r);
      process.stderr.write(`throughput ${mode}: an IP moved during the run, again\n`);
    }
  };
  const record = (mode: Mode, r: IperfResult) => {
    results[mode].push(r);
    process.stderr.write(
      `throughput ${mode}: ${r.gbps.toFixed(2)} Gbit/s (${r.retransmits} retransmits), ${r.kpps.toFixed(0)} kpps\n`,
    );
  };

  const loadBefore = loadavg()[0]!;
  for (let round = 0; round < ROUNDS; round++) {
    // Each round: the hand-made path first or last, in turn, and the two configs in turn.
    const order: Mode[] = round % 2 === 0 ? ['ours', 'ours1000', 'hand'] : ['hand', 'ours1000', 'ours'];
    for (const mode of order) {
      if (mode === 'hand') {
        if (daemons) await stopOurs();
        const undo = await handMade(lab, owner, c1.host, c1.cidr, FIPS[0]);
        try {
          await run('hand');
        } finally {
          await undo();
        }
      } else {
        await ours(mode);
        await sleep(500); // the take-over's gratuitous ARPs and first reconciles are done
        await run(mode);
      }
    }
    if (daemons) await stopOurs();
  }
  return report(results, loadBefore, loadavg()[0]!);
}

function report(r: Record<Mode, IperfResult[]>, before: number, after: number): string {
  type Key = 'gbps' | 'kpps';
  const med = (xs: IperfResult[], k: Key | 'retransmits') => median(xs.map((x) => x[k]));
  const ratio = (a: IperfResult[], b: IperfResult[], k: Key) => median(a.map((x, i) => x[k] / b[i]![k]));
  const verdict = (x: number) => `${x.toFixed(3)} | ≥ 0.95 ${x >= 0.95 ? '✓' : '✗'}`;
  const runs = (xs: IperfResult[], k: Key) => xs.map((x) => x[k].toFixed(k === 'gbps' ? 2 : 0)).join(', ');
  const row = (name: string, xs: IperfResult[]) =>
    `| ${name} | ${med(xs, 'gbps').toFixed(2)} | ${med(xs, 'retransmits').toFixed(0)} | ${med(xs, 'kpps').toFixed(0)} | ${runs(xs, 'gbps')} | ${runs(xs, 'kpps')} |`;
  return `## Throughput through a floating IP: iperf3, egress-natd against the same path by hand

iperf3 from c1 to the router, through c1's host (h3) and the owner of ${FIPS[0]}, which SNATs it: TCP (one stream,
${SECONDS} s counted after ${OMIT} s not counted), then UDP with 64-byte datagrams sent as fast as the client can for
${SECONDS} s (datagrams that arrived, per second). Three ways on one lab, ${ROUNDS} rounds of one run each, the order
alternating from round to round:

- **egress-natd, 1 policy**: the daemons on every host, one policy (c1's network → the echo network).
- **egress-natd, ${POLICIES} policies**: the same, reloaded with ${POLICIES - 1} policies that do not match the flow (each its own
  source /24 and destination /32, over both floating IPs of the gateway) before the measured one.
- **by hand**: daemons stopped and \`egress-natd release\`d; on the same owner the IP on eth0, forwarding on eth0
  and one \`snat\` rule; on h3 a static route to the echo network via the IP.

Each run checks first that c1's connections reach the echo server with ${FIPS[0]} as source, and is run again if an
IP moved during it. Ratios are per round (runs next to each other), then the median. Load average
${before.toFixed(1)} before, ${after.toFixed(1)} after (2 cores).

| path | TCP Gbit/s (median) | TCP retransmits (median) | UDP 64 B kpps (median) | TCP runs | UDP runs |
|---|---:|---:|---:|---|---|
${row('by hand: static route + one snat rule', r.hand)}
${row('egress-natd, 1 policy', r.ours)}
${row(`egress-natd, ${POLICIES} policies`, r.ours1000)}

| ratio (median of rounds) | value | target |
|---|---:|---|
| TCP: egress-natd 1 policy / by hand | ${verdict(ratio(r.ours, r.hand, 'gbps'))} |
| TCP: egress-natd ${POLICIES} policies / 1 policy | ${verdict(ratio(r.ours1000, r.ours, 'gbps'))} |
| UDP 64 B: egress-natd 1 policy / by hand | ${verdict(ratio(r.ours, r.hand, 'kpps'))} |
| UDP 64 B: egress-natd ${POLICIES} policies / 1 policy | ${verdict(ratio(r.ours1000, r.ours, 'kpps'))} |

**What egress-natd adds per packet** (docs/datapath.md): on c1's host, prerouting classification (a local-address
check, then \`ip saddr vmap\` and \`ip daddr vmap\`: two set lookups whatever the number of policies), a mark, and
an \`ip rule\` lookup by fwmark into the IP's table (\`default via <IP> onlink\`); on the owner, the frame arrives
at the macvlan's virtual MAC (the macvlan's receive handler picks it off eth0 by destination MAC), the relay
guard (an interface vmap, a source vmap, a destination vmap), SNAT by input interface from a map, and the leak
guard after SNAT. By hand: a route lookup and one snat rule. Over veths TCP travels in GSO/GRO super-packets of up
to 64 KB, so these costs are paid once per super-packet and hide in the TCP figures; the 64-byte datagrams pay them
on every packet. With ${POLICIES} policies the lookups are still two interval-set lookups per classification (deeper
by log n), not one rule per policy.
`;
}
