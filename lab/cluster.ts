import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { nodesYaml, policiesYaml } from './config.js';
import { ECHO, net24, SUBNET_PREFIX, type ContainerSpec, type DaemonStatus, type HostSpec, type Lab } from './lab.js';

// The cluster lab of the cluster issue: four hosts (two labelled workers, a labelled
// control-plane node, an unlabelled worker), three floating IPs in two gateways.

export const CLUSTER_HOSTS: HostSpec[] = [
  { name: 'h1', ip: `${SUBNET_PREFIX}.1`, labels: { egress: 'yes' } },
  { name: 'h2', ip: `${SUBNET_PREFIX}.2`, labels: { egress: 'yes' } },
  { name: 'h3', ip: `${SUBNET_PREFIX}.3`, labels: { egress: 'yes' }, role: 'control-plane' },
  { name: 'h4', ip: `${SUBNET_PREFIX}.4` },
];
export const CLUSTER_CONTAINERS: ContainerSpec[] = [
  { name: 'c1', host: 'h3', cidr: '10.10.1.0/24', ip: '10.10.1.2' },
  { name: 'c2', host: 'h4', cidr: '10.10.2.0/24', ip: '10.10.2.2' },
];
/** primary: .100 and .101, for labelled nodes; secondary: .102, for anyone. */
export const CLUSTER_FIPS = {
  shop: `${SUBNET_PREFIX}.100`,
  batch: `${SUBNET_PREFIX}.101`,
  reports: `${SUBNET_PREFIX}.102`,
} as const;

export interface ClusterConfigOptions {
  readonly noGateway?: 'drop' | 'masquerade';
  readonly transport?: 'multicast' | 'unicast';
  readonly intervalMs?: number;
  readonly port?: number;
  /** false: connection sync off (it is on by default). */
  readonly connectionSync?: boolean;
}

/** Where a cluster config runs: the namespace lab, or the Vagrant VMs (lab/vagrant.ts). */
export interface ClusterSite {
  readonly name: string;
  readonly keyFile: string;
  readonly interface: string;
  readonly hosts: readonly HostSpec[];
  /** The first three octets of the segment: floating IPs are .100, .101, .102. */
  readonly subnetPrefix: string;
}

/** The namespace lab as a site: its hosts on eth0, its key. */
export const labSite = (lab: Lab): ClusterSite => ({
  name: lab.id,
  keyFile: join(lab.dir, 'cluster.key'),
  interface: 'eth0',
  hosts: lab.hosts,
  subnetPrefix: SUBNET_PREFIX,
});

export function clusterConfig(lab: Lab, opts: ClusterConfigOptions = {}): string {
  return siteConfig(labSite(lab), opts);
}

/** The cluster config of the tests, for any site: same gateways, workloads and policies. */
export function siteConfig(site: ClusterSite, opts: ClusterConfigOptions = {}): string {
  const fip = (n: number) => `${site.subnetPrefix}.${n}`;
  return `version: 1
cluster:
  name: ${site.name}
  interface: ${site.interface}
  heartbeat:
    interval: ${opts.intervalMs ?? 100}ms
    missed: 3
    transport: ${opts.transport ?? 'multicast'}${opts.transport === 'unicast' ? '' : '\n    group: 239.255.76.67'}
    port: ${opts.port ?? 7607}
    keyFile: ${site.keyFile}
  noGateway: ${opts.noGateway ?? 'drop'}${opts.connectionSync === false ? '\n  connectionSync: { enabled: false }' : ''}
nodes:
${nodesYaml(site.hosts)}
gateways:
  - name: primary
    floatingIPs: [${fip(100)}, ${fip(101)}]
    nodeSelector: { egress: "yes" }
  - name: secondary
    floatingIPs: [${fip(102)}]
workloads:
  - name: shop
    labels: { app: shop }
    cidrs: [10.10.1.0/24]
  - name: batch
    labels: { app: batch }
    cidrs: [10.10.2.0/24]
policies:
${policiesYaml([
  {
    name: 'shop',
    from: { app: 'shop' },
    to: net24(ECHO.inPolicy),
    except: `${ECHO.excluded}/32`,
    gateway: 'primary',
    egressIP: fip(100),
  },
  { name: 'batch', from: { app: 'batch' }, to: net24(ECHO.inPolicy), gateway: 'primary', egressIP: fip(101) },
  { name: 'reports', from: { app: 'shop' }, to: net24(ECHO.other), gateway: 'secondary', egressIP: fip(102) },
])}
`;
}

/**
 * Polls `fn` (at once, then every `pollMs`) until it returns a value (not undefined or false); throws after
 * `timeoutMs`, with the last error. A poll that runs the CLI costs a Node start-up per call:
 * poll slowly where the daemons under test need the CPU.
 */
export async function waitUntil<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 10_000,
  pollMs = 25,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  // At least once: a timeout of 0 asks once.
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() + pollMs > end) break;
    await sleep(pollMs);
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`,
  );
}

/**
 * Waits until the daemons on `running` are ready, agree on the owners, and each owner
 * (alone among them) holds its IP in the kernel. A host cut off and killed still has
 * its addresses: only the running hosts count.
 */
export async function settled(
  lab: Lab,
  running: readonly string[],
  timeoutMs = 10_000,
  pollMs = 25,
): Promise<DaemonStatus> {
  return waitUntil(
    `${running.join(',')} to agree and hold their IPs`,
    async () => {
      const all = await Promise.all(running.map((h) => lab.status(h)));
      if (!all.every((s) => s.ready)) return undefined;
      const owners = JSON.stringify(all[0]!.floatingIPs);
      if (!all.every((s) => JSON.stringify(s.floatingIPs) === owners)) return undefined;
      for (const [ip, owner] of Object.entries(all[0]!.floatingIPs)) {
        const holders = (await lab.holders(ip)).filter((h) => running.includes(h));
        if (owner ? holders.join() !== owner : holders.length) return undefined;
      }
      return all[0]!;
    },
    timeoutMs,
    pollMs,
  ).catch((e: Error) => {
    throw new Error(`${e.message}\n${logTails(lab, running)}`, { cause: e });
  });
}

/** The last lines each daemon logged: what a test that timed out waiting for them should show. */
export function logTails(lab: Lab, hosts: readonly string[], lines = 4): string {
  const tail = (h: string) => {
    try {
      return readFileSync(lab.daemonLog(h), 'utf8').trim().split('\n').slice(-lines).join('\n    ');
    } catch (e) {
      return `(no log: ${(e as Error).message})`;
    }
  };
  return hosts.map((h) => `  ${h}: ${tail(h)}`).join('\n');
}
