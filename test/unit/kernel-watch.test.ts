import t from 'tap';
import { isAboutLink } from '../../src/daemon/kernel-watch.js';

// Interface names are matched literally: ".", "-" and "+" are ordinary characters in
// them (a RegExp built from the name would make "eth0.100" match "eth0x100").

const line = (name: string) =>
  `7: ${name}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP \\    link/ether 02:00:00:00:00:01`;

t.test('isAboutLink matches the name literally', async (t) => {
  for (const name of ['eth0', 'eth0.100', 'br-x', 'a+b']) {
    t.ok(isAboutLink(line(name), name), `${name}`);
    t.ok(isAboutLink(`7: ${name}@if8: <UP,LOWER_UP> mtu 1500`, name), `${name}@if8`);
  }
  t.notOk(isAboutLink(line('eth0x100'), 'eth0.100'), '"." is not a wildcard');
  t.notOk(isAboutLink(line('aab'), 'a+b'), '"+" is not a repetition');
  t.notOk(isAboutLink(line('eth0.100'), 'eth0'), 'a VLAN on eth0 is not eth0');
  t.notOk(isAboutLink(line('br-xy'), 'br-x'), 'a longer name is another link');
  t.notOk(isAboutLink('2: eth0    inet 192.168.1.1/24 brd 192.168.1.255 scope global eth0', 'eth0'), 'an address line');
});
