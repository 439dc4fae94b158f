import { join } from 'node:path';
import { ECHO, FIPS, type Lab } from './lab.js';

export interface LabConfigOptions {
  readonly noGateway?: 'drop' | 'masquerade';
}

/** The lab's config file: two policies, each with its own floating IP of one gateway. */
export function labConfig(lab: Lab, opts: LabConfigOptions = {}): string {
  const nodes = lab.hosts.map((h) => `  - name: ${h.name}
    address: ${h.ip}/24
    role: ${h.role ?? 'worker'}
    labels: ${JSON.stringify(h.labels ?? {})}`).join('\n');
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
${nodes}
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
  - name: shop
    sources:
      - workloadSelector: { matchLabels: { app: shop } }
    destinations:
      - cidr: ${ECHO.inPolicy.replace(/\.\d+$/, '.0')}/24
    excludedDestinations:
      - cidr: ${ECHO.excluded}/32
    action: SNAT
    gatewayRef: default
    egressIP: ${FIPS[0]}
  - name: batch
    sources:
      - cidrs: [${c2.cidr}]
    destinations:
      - cidr: ${ECHO.inPolicy.replace(/\.\d+$/, '.0')}/24
    action: SNAT
    gatewayRef: default
    egressIP: ${FIPS[1]}
`;
}
