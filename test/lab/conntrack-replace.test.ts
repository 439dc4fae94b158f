import t from 'tap';
import { fileURLToPath } from 'node:url';
import { run } from '../../lab/lab.js';
import { NODE } from '../../lab/paths.js';
import { natNamespace } from '../helpers.js';

// A synced connection whose original tuple the new owner still tracks from an earlier
// tenure (a client port reused; the old entry in TIME_WAIT, NATed to another port)
// replaces that entry: left in place, the old entry took the server's segments and the
// connection went silent (the sync bench lost server-push connections so, 2 in 20 trials).

const module = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const TIME_WAIT = 7;
const ESTABLISHED = 3;

const script = `
import { insertEntries } from ${JSON.stringify(module('../../src/dataplane/conntrack-insert.js'))};
import { streamEntries } from ${JSON.stringify(module('../../src/dataplane/conntrack-dump.js'))};
import { parseEntry } from ${JSON.stringify(module('../../src/dataplane/conntrack-entry.js'))};
const base = { proto: 6, src: '10.1.0.2', dst: '10.9.0.1', sport: 40000, dport: 8080, natIp: '192.168.1.100', status: 6 };
const stale = await insertEntries([{ ...base, natPort: 40000, timeout: 120, tcpState: ${TIME_WAIT} }]);
const synced = await insertEntries([{ ...base, natPort: 40001, timeout: 3600, tcpState: ${ESTABLISHED} }]);
const found = [];
await streamEntries((p) => {
  const e = parseEntry(p);
  if (e && e.orig.src === base.src) found.push({ tcpState: e.tcpState, natPort: e.reply.dport });
});
console.log(JSON.stringify({ stale, synced, found }));
`;

t.test("a synced connection replaces this host's older entry of the same tuple", async (t) => {
  const ns = await natNamespace(t, 'enct');
  const out = await run(['ip', 'netns', 'exec', ns, ...NODE, '--input-type=module', '-e', script]);
  const r = JSON.parse(out.stdout) as {
    stale: { inserted: number };
    synced: { inserted: number; replaced: number; existing: unknown[] };
    found: { tcpState: number; natPort: number }[];
  };
  t.equal(r.stale.inserted, 1, 'the older entry is in place');
  t.equal(r.synced.replaced, 1, 'the synced entry replaced it');
  t.same(r.synced.existing, [], 'nothing left clashing');
  t.same(r.found, [{ tcpState: ESTABLISHED, natPort: 40001 }], 'one entry: the synced one, with its SNAT port');
});
