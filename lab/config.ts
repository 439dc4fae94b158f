import { join } from 'node:path';
import { ECHO, FIPS, net24, type HostSpec, type Lab } from './lab.js';

export interface LabConfigOptions {
  readonly noGateway?: 'drop' | 'masquerade';
}

/** The `nodes:` list of a lab config file (without the key): one /24 address per host; role worker unless said. */
export function nodesYaml(hosts: readonly HostSpec[]): string {
  return hosts
    .map(
      (h) => `  - name: ${h.name}
    address: ${h.ip}/24
    role: ${h.role ?? 'worker'}
    labels: ${JSON.stringify(h.labels ?? {})}`,
    )
    .join('\n');
}

/** A SNAT policy of a lab config: one source (a workload's `app` label, or CIDRs), one destination, maybe one excluded. */
export interface PolicySpec {
  readonly name: string;
  readonly from: { readonly app: string } | { readonly cidrs: readonly string[] };
  readonly to: string;
  readonly except?: string;
  readonly gateway: string;
  readonly egressIP: string;
}

/** The `policies:` list of a lab config file (without the key). */
export function policiesYaml(policies: readonly PolicySpec[]): string {
  return policies
    .map(
      (p) => `  - name: ${p.name}
    sources:
      - ${'app' in p.from ? `workloadSelector: { matchLabels: { app: ${p.from.app} } }` : `cidrs: [${p.from.cidrs.join(', ')}]`}
    destinations:
      - cidr: ${p.to}${
        p.except
          ? `
    excludedDestinations:
      - cidr: ${p.except}`
          : ''
      }
    action: SNAT
    gatewayRef: ${p.gateway}
    egressIP: ${p.egressIP}`,
    )
    .join('\n');
}

/** The lab's config file: two policies, each with its own floating IP of one gateway. */
export function labConfig(lab: Lab, opts: LabConfigOptions = {}): string {
  const c1 = lab.containers.find((c) => c.name === 'c1')!;
  const c2 = lab.containers.find((c) => c.name === 'c2')!;
  return `version: 1
cluster:
  name: ${lab.id}
  interface: eth0
  heartbeat:
    interval: 100ms
    missed: 3
    transport: multicast
    group: 239.255.76.67
    port: 7607
    keyFile: ${join(lab.dir, 'cluster.key')}
  noGateway: ${opts.noGateway ?? 'drop'}
nodes:
${nodesYaml(lab.hosts)}
gateways:
  - name: default
    floatingIPs: [${FIPS.join(', ')}]
    nodeSelector: { node-type: egressNat }
workloads:
  - name: shop
    labels: { app: shop }
    cidrs: [${c1.cidr}]
    cgroups: [${lab.cgroup}]
policies:
${policiesYaml([
  {
    name: 'shop',
    from: { app: 'shop' },
    to: net24(ECHO.inPolicy),
    except: `${ECHO.excluded}/32`,
    gateway: 'default',
    egressIP: FIPS[0],
  },
  { name: 'batch', from: { cidrs: [c2.cidr] }, to: net24(ECHO.inPolicy), gateway: 'default', egressIP: FIPS[1] },
])}
`;
}

/** `apply` on every lab host with the same static owners (floating IP → host). */
export async function applyAll(lab: Lab, config: string, owners: Record<string, string> = {}): Promise<void> {
  const args = Object.entries(owners).flatMap(([ip, n]) => ['--owner', `${ip}=${n}`]);
  for (const h of lab.hosts) await lab.egress(h.name, ['apply', '-c', config, '-n', h.name, ...args]);
}
