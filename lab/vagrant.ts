import { fileURLToPath } from 'node:url';
import { siteConfig, type ClusterSite } from './cluster.js';

// The Vagrant lab (vagrant/Vagrantfile): the tests' cluster config on VMs. The segment is
// 192.168.56.0/24, the range VirtualBox allows host-only networks by default; hosts are
// .11-.13 because the hypervisor's own address on the network is .1; the router is .254.
// vagrant/config.yaml is this output, and a test keeps them equal:
//   node dist/lab/vagrant.js > vagrant/config.yaml

export const VAGRANT_SITE: ClusterSite = {
  name: 'vagrant',
  keyFile: '/etc/egress-natd/cluster.key',
  interface: 'eth1',
  subnetPrefix: '192.168.56',
  hosts: [
    { name: 'h1', ip: '192.168.56.11', labels: { egress: 'yes' } },
    { name: 'h2', ip: '192.168.56.12', labels: { egress: 'yes' } },
    { name: 'h3', ip: '192.168.56.13' },
  ],
};

export const vagrantConfig = (): string =>
  `# The Vagrant lab's config, made by lab/vagrant.ts from the tests' cluster config.\n${siteConfig(VAGRANT_SITE)}`;

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(vagrantConfig());
