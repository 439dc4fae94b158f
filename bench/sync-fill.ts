import { insertEntries } from '../src/dataplane/conntrack-insert.js';

// `sync-fill N IP`, run in a lab host: N established TCP connections SNATed to IP, made up
// (workload 10.20.x.y, servers 203.0.113.1, .2, ... port 443), inserted into the host's
// conntrack table with an hour to live: what connection sync then has to carry.

const [countText, ip] = process.argv.slice(2);
const n = Number(countText);
const PER_SERVER = 50_000;
const entries = Array.from({ length: n }, (_, i) => ({
  proto: 6,
  src: `10.20.${(i >> 8) & 255}.${i & 255}`,
  dst: `203.0.113.${1 + Math.floor(i / PER_SERVER)}`,
  sport: 10_000 + (i % PER_SERVER),
  dport: 443,
  natIp: ip!,
  natPort: 10_000 + (i % PER_SERVER),
  status: 6,
  timeout: 3600,
  tcpState: 3,
}));
const r = await insertEntries(entries);
process.stdout.write(`${JSON.stringify(r.error ? { ...r, existing: r.existing.length } : { inserted: r.inserted })}\n`);
