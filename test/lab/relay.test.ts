import t, { type Test as Tap } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLUSTER_CONTAINERS, CLUSTER_FIPS, CLUSTER_HOSTS, clusterConfig, settled } from '../../lab/cluster.js';
import { ECHO, Lab, SUBNET_PREFIX, type HostSpec } from '../../lab/lab.js';
import { scrape } from '../../lab/scrape.js';
import { startProber, waitForFlow } from '../../lab/traffic.js';

// The owner of a floating IP is no open SNAT relay (docs/datapath.md, "The relay guard"):
// what arrives on its macvlan egresses only if the config selects it, whoever routes it
// there. A stranger on the segment, a workload routed by hand to a destination its
// policy does not name: no answer, counted by reason. Policy traffic flows as before,
// also from sources on nodes the owner is not (a workload pinned to other nodes, local
// processes of another node in a cgroup) and across a handover.

const { shop: SHOP, batch: BATCH } = CLUSTER_FIPS;
const STRANGER = `${SUBNET_PREFIX}.50`;
const METRICS_PORT = 9607;

// h3 and h4 carry the containers; the shop workload (c1, and a cgroup) runs there only,
// so the owners of its IP (workers h1, h2) do not run it.
const HOSTS: HostSpec[] = CLUSTER_HOSTS.map((h) =>
  h.name === 'h3' || h.name === 'h4' ? { ...h, labels: { ...h.labels, containers: 'yes' } } : h,
);

t.test('the owner relays only what the config selects', async (t) => {
  const lab = await Lab.create(HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  await lab.addStranger('x', STRANGER);
  const cfg = join(lab.dir, 'config.yaml');
  const base = clusterConfig(lab);
  const pinned = base.replace(
    'cidrs: [10.10.1.0/24]',
    `cidrs: [10.10.1.0/24]\n    cgroups: [${lab.cgroup}]\n    nodeSelector: { containers: "yes" }`,
  );
  t.not(pinned, base, 'the shop workload runs on h3 and h4 only, with a cgroup');
  writeFileSync(cfg, pinned);
  await lab.makeCgroup('h4');
  const names = lab.hosts.map((h) => h.name);
  await Promise.all(names.map((h) => lab.startDaemon(h, cfg)));
  let status = await settled(lab, names, 15_000);
  const ownerOf = (ip: string) => status.floatingIPs[ip]!;
  t.ok(['h1', 'h2'].includes(ownerOf(SHOP)), `${SHOP} is owned by a worker that does not run shop`);

  const dropped = async (host: string, ip: string, reason: string) =>
    (await scrape(lab, host, METRICS_PORT)).samples.get(
      `egress_natd_relay_dropped_total{ip="${ip}",reason="${reason}"}`,
    );
  /** Asks from `from` and returns the answer and what the echo server saw meanwhile. */
  const ask = async (from: string, dest: string, opts: { cgroup?: boolean } = {}) => {
    const seen = lab.seen.length;
    const answer = await lab.probe(from, dest, opts);
    await sleep(100);
    return { answer, seen: lab.seen.slice(seen) };
  };

  await t.test('policy traffic leaves with its floating IP, from any node', async (t) => {
    t.equal((await ask('c1', ECHO.inPolicy)).answer, SHOP, 'c1, a workload the owner does not run');
    t.equal((await ask('h4', ECHO.inPolicy, { cgroup: true })).answer, SHOP, "a local process in h4's cgroup");
    t.equal((await ask('c2', ECHO.inPolicy)).answer, BATCH, 'c2');
    for (const ip of [SHOP, BATCH]) {
      t.equal(await dropped(ownerOf(ip), ip, 'source'), 0, `nothing dropped on ${ip} for its source`);
      t.equal(await dropped(ownerOf(ip), ip, 'destination'), 0, `nothing dropped on ${ip} for its destination`);
    }
  });

  /** `from` asks `dest` through `ip`'s owner: no answer, nothing reaches the echo server, counted with `reason`. */
  const refused = async (t: Tap, from: string, dest: string, ip: string, reason: string) => {
    const before = (await dropped(ownerOf(ip), ip, reason)) ?? 0;
    const r = await ask(from, dest);
    t.equal(r.answer, undefined, `${from} to ${dest}: no answer`);
    t.same(r.seen, [], 'the echo server saw nothing');
    const after = (await dropped(ownerOf(ip), ip, reason)) ?? 0;
    t.ok(after > before, `counted as ${reason} on ${ownerOf(ip)}: ${before} -> ${after}`);
  };

  await t.test('a stranger routed via the floating IP gets nothing through', async (t) => {
    await lab.sh('x', `ip route add 203.0.113.0/24 via ${SHOP}`);
    await refused(t, 'x', ECHO.inPolicy, SHOP, 'source');
  });

  await t.test('the floating IP serves nothing: no reset, no port unreachable; a ping is answered', async (t) => {
    // Right after a failover a server's segment can reach the IP before its synced connection
    // is in (src/dataplane/reconcile.ts, stateFirst): dropped, it is sent again; a reset ends it.
    const knock = async (proto: 'tcp' | 'udp') =>
      (
        await lab.sh(
          'x',
          `python3 -c "import socket
s = socket.socket(socket.AF_INET, socket.SOCK_${proto === 'tcp' ? 'STREAM' : 'DGRAM'})
s.settimeout(1)
try:
    s.connect(('${SHOP}', 4444)); s.send(b'x'); s.recv(1); print('answered')
except socket.timeout: print('silence')
except OSError as e: print(type(e).__name__)"`,
        )
      ).stdout.trim();
    t.equal(await knock('tcp'), 'silence', 'a TCP segment for no connection: dropped, no reset');
    t.equal(await knock('udp'), 'silence', 'a UDP datagram for no connection: dropped, no port unreachable');
    // An ICMP echo request by hand (no ping in the lab): type 8, checksum over the header.
    const ping = await lab.sh(
      'x',
      `python3 -c "import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(1)
h = struct.pack('!BBHHH', 8, 0, 0, 7, 1)
c = sum(struct.unpack('!4H', h)); c = (c & 0xffff) + (c >> 16)
s.sendto(struct.pack('!BBHHH', 8, 0, ~c & 0xffff, 7, 1), ('${SHOP}', 0))
try:
    d, a = s.recvfrom(100); print('reply' if a[0] == '${SHOP}' and d[20] == 0 else 'other')
except socket.timeout: print('silence')"`,
    );
    t.equal(ping.stdout.trim(), 'reply', `a ping of ${SHOP} is answered`);
    // The owner's own processes still reach a service on the IP (over lo; from another
    // source address than the IP, which the leak guard keeps to selected traffic).
    const own = await lab.sh(
      ownerOf(SHOP),
      `python3 -c "import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(('${SHOP}', 4445)); l.listen()
c = socket.create_connection(('${SHOP}', 4445), timeout=1, source_address=('127.0.0.1', 0)); a, _ = l.accept(); a.sendall(b'hi'); print(c.recv(2).decode())"`,
      { allowFail: true },
    );
    t.equal(own.stdout.trim(), 'hi', `${ownerOf(SHOP)} itself connects to a service on ${SHOP}`);
  });

  await t.test('a workload routed by hand to a destination its policy does not name', async (t) => {
    // c2's host sends c2's traffic for `other` (no policy of c2 names it) to batch's IP.
    await lab.sh('h4', `ip route add ${ECHO.other}/32 via ${BATCH}`);
    await refused(t, 'c2', ECHO.other, BATCH, 'destination');
    // c1's host sends c1's traffic for the address shop excludes to shop's IP.
    await lab.sh('h3', `ip route add ${ECHO.excluded}/32 via ${SHOP}`);
    await refused(t, 'c1', ECHO.excluded, SHOP, 'destination');
  });

  await t.test('after a handover the new owner takes what the old one took, and no more', async (t) => {
    const old = ownerOf(SHOP);
    const probe = await startProber(lab, 'c1', ECHO.inPolicy);
    t.teardown(() => probe.stop());
    await waitForFlow(probe.log, SHOP);
    await lab.egress(old, ['drain']);
    status = await settled(lab, names, 15_000);
    const now = ownerOf(SHOP);
    t.not(now, old, `${SHOP} moved from ${old} to ${now}`);
    await waitForFlow(probe.log, SHOP);
    t.pass(`c1 answers with ${SHOP} through ${now}`);
    t.equal((await ask('h4', ECHO.inPolicy, { cgroup: true })).answer, SHOP, "and h4's cgroup too");
    await probe.stop();
    t.equal(await dropped(now, SHOP, 'source'), 0, 'the new owner dropped none of it');
    t.equal(await dropped(now, SHOP, 'destination'), 0);
    await refused(t, 'x', ECHO.inPolicy, SHOP, 'source');
    await lab.egress(old, ['undrain']);
  });
});
