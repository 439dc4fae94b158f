import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { labSite, waitUntil } from '../lab/cluster.js';
import { nodesYaml, policiesYaml, type PolicySpec } from '../lab/config.js';
import { ECHO, net24, type Lab } from '../lab/lab.js';

// The pieces of the throughput section: its configs (one policy, or 1,000 where the
// measured flow matches the last), the same path made by hand (a static route and one
// snat rule), and iperf3 between c1 and the router.

export const IPERF_PORT = 5201;
const HAND_TABLE = 'hand_snat';

/** The measured flow's policy: c1's network to the echo network, SNAT to `egressIP`. */
export const measuredPolicy = (sourceCidr: string, egressIP: string): PolicySpec => ({
  name: 'measured',
  from: { cidrs: [sourceCidr] },
  to: net24(ECHO.inPolicy),
  gateway: 'primary',
  egressIP,
});

/**
 * `count - 1` policies the flow does not match (each its own source /24 in 10.100.0.0/14 and
 * its own destination /32 in 198.18.0.0/16, spread over both floating IPs), then `last`.
 */
export function manyPolicies(count: number, last: PolicySpec, fips: readonly [string, string]): PolicySpec[] {
  const others = Array.from({ length: count - 1 }, (_, k): PolicySpec => ({
    name: `p${String(k).padStart(4, '0')}`,
    from: { cidrs: [`10.${100 + (k >> 8)}.${k & 255}.0/24`] },
    to: `198.18.${k >> 8}.${k & 255}/32`,
    gateway: 'primary',
    egressIP: fips[k % 2]!,
  }));
  return [...others, last];
}

/** A cluster config of the lab's hosts (100 ms heartbeats) with these policies, written to `file`. */
export function writeConfig(lab: Lab, file: string, fips: readonly [string, string], policies: PolicySpec[]): void {
  const site = labSite(lab);
  writeFileSync(
    file,
    `version: 1
cluster:
  name: ${site.name}
  interface: eth0
  heartbeat:
    interval: 100ms
    missed: 3
    transport: multicast
    group: 239.255.76.67
    port: 7607
    keyFile: ${site.keyFile}
  noGateway: drop
  metrics: { enabled: false }
nodes:
${nodesYaml(site.hosts)}
gateways:
  - name: primary
    floatingIPs: [${fips.join(', ')}]
    nodeSelector: { egress: "yes" }
policies:
${policiesYaml(policies)}
`,
  );
}

/**
 * egress-natd's job done by hand for one flow: the owner holds the IP on eth0 and forwards
 * on eth0; the client's host routes the echo network via the IP; one snat rule on the owner.
 */
export async function handMade(lab: Lab, owner: string, clientHost: string, sourceCidr: string, ip: string) {
  const nft = join(lab.dir, 'hand-snat.nft');
  writeFileSync(
    nft,
    `table ip ${HAND_TABLE} {
  chain post {
    type nat hook postrouting priority srcnat;
    ip saddr ${sourceCidr} ip daddr ${net24(ECHO.inPolicy)} snat to ${ip}
  }
}
`,
  );
  const forwarding = `net.ipv4.conf.eth0.forwarding`;
  const before = (await lab.sh(owner, `sysctl -n ${forwarding}`)).stdout.trim();
  await lab.sh(owner, `ip addr add ${ip}/32 dev eth0 && sysctl -qw ${forwarding}=1 && nft -f ${nft}`);
  await lab.sh(clientHost, `ip route add ${net24(ECHO.inPolicy)} via ${ip} dev eth0 onlink`);
  await forgetNeighbours(lab);
  return async (): Promise<void> => {
    await lab.sh(clientHost, `ip route del ${net24(ECHO.inPolicy)} via ${ip} dev eth0 onlink`);
    await lab.sh(
      owner,
      `nft delete table ip ${HAND_TABLE} && sysctl -qw ${forwarding}=${before} && ip addr del ${ip}/32 dev eth0`,
    );
    await forgetNeighbours(lab);
  };
}

/** The IP moves between a macvlan (its virtual MAC) and eth0: no host or the router may keep the old MAC. */
export async function forgetNeighbours(lab: Lab): Promise<void> {
  await Promise.all([...lab.hosts.map((h) => h.name), 'r'].map((n) => lab.sh(n, 'ip neigh flush all')));
}

/** iperf3's server on the router, on the echo address (lab.destroy ends it with the namespace). */
export async function startIperfServer(lab: Lab): Promise<void> {
  const child = spawn(
    'ip',
    ['netns', 'exec', lab.ns('r'), 'iperf3', '-s', '-B', ECHO.inPolicy, '-p', `${IPERF_PORT}`],
    {
      stdio: 'ignore',
    },
  );
  lab.onDestroy(() => void child.kill('SIGKILL'));
  await new Promise<void>((ok, fail) => {
    child.once('spawn', ok);
    child.once('error', fail);
  });
  await waitUntil('iperf3 to listen on the router', async () =>
    (await lab.sh('r', `ss -Hltn sport = :${IPERF_PORT}`)).stdout.includes(`${IPERF_PORT}`),
  );
}

export interface IperfResult {
  readonly gbps: number;
  readonly retransmits: number;
  /** Small UDP datagrams (64 bytes of payload) that arrived, thousands per second: the per-packet cost. */
  readonly kpps: number;
}

/**
 * One TCP test from `from` to the router, `seconds` long after `omit` s of ramp-up that are
 * not counted, then one of small UDP datagrams as fast as the client can send them: TCP
 * travels in GSO super-packets of up to 64 KB, which hide per-packet costs; 64-byte
 * datagrams pay them on every packet.
 */
export async function iperf(lab: Lab, from: string, seconds: number, omit: number): Promise<IperfResult> {
  const timeoutMs = (seconds + omit + 20) * 1000;
  const base = `iperf3 -c ${ECHO.inPolicy} -p ${IPERF_PORT} -t ${seconds} -J`;
  const tcp = JSON.parse((await lab.sh(from, `${base} -O ${omit}`, { timeoutMs })).stdout) as {
    end: { sum_received: { bits_per_second: number }; sum_sent: { retransmits?: number } };
  };
  // UDP has no ramp-up to leave out.
  const udp = JSON.parse((await lab.sh(from, `${base} -u -b 0 -l 64`, { timeoutMs })).stdout) as {
    end: { sum: { packets: number; lost_packets: number; seconds: number } };
  };
  const got = udp.end.sum.packets - udp.end.sum.lost_packets;
  return {
    gbps: tcp.end.sum_received.bits_per_second / 1e9,
    retransmits: tcp.end.sum_sent.retransmits ?? 0,
    kpps: got / udp.end.sum.seconds / 1e3,
  };
}
