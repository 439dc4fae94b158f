import t from 'tap';
import { fileURLToPath } from 'node:url';
import { run } from '../../lab/lab.js';
import { NODE } from '../../lab/paths.js';
import { natNamespace } from '../helpers.js';

// SNAT port pressure walks the conntrack table once for every floating IP a node holds,
// the kernel passing only source-NATed entries (CTA_STATUS under CTA_STATUS_MASK): one
// walk instead of one per IP, each 10 ms on an empty table of 262,144 buckets.

const module = (path: string) => fileURLToPath(new URL(path, import.meta.url));

const script = `
import { eachSnatConnection } from ${JSON.stringify(module('../../src/dataplane/conntrack-dump.js'))};
const seen = [];
await eachSnatConnection((c) => seen.push(c.orig.sport + '>' + c.reply.dst));
console.log(JSON.stringify(seen.sort()));
`;

t.test('one walk: the SNATed entries of every address, and nothing else', async (t) => {
  const ns = await natNamespace(t, 'ensf');
  const entry = (sport: number, ...more: string[]) =>
    run([
      'ip',
      'netns',
      'exec',
      ns,
      'conntrack',
      '-I',
      '-p',
      'udp',
      '-s',
      '10.0.0.1',
      '-d',
      '10.0.0.2',
      '--sport',
      String(sport),
      '--dport',
      '53',
      '-t',
      '60',
      ...more,
    ]);
  await entry(1000, '-u', 'SEEN_REPLY'); // not NATed
  await entry(1001, '--src-nat', '192.168.1.100');
  await entry(1002, '--src-nat', '192.168.1.101');
  await entry(1003, '--dst-nat', '10.0.0.9'); // destination NAT: not ours to count
  const out = await run(['ip', 'netns', 'exec', ns, ...NODE, '--input-type=module', '-e', script]);
  t.same(JSON.parse(out.stdout), ['1001>192.168.1.100', '1002>192.168.1.101']);
});
