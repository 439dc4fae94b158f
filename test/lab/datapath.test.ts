import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyAll, labConfig } from '../../lab/config.js';
import { ECHO, FIPS, Lab } from '../../lab/lab.js';
import { macvlanName, virtualMac } from '../../src/plan/naming.js';

// The static data path on the real kernel: three hosts, a router with an echo server,
// a container behind h1 and h3, a local process in a cgroup. Owners are given by hand.

const [FIP_A, FIP_B] = FIPS;
const MAC_A = virtualMac({ family: 4, value: 0xc0a80164n });
const IF_A = macvlanName({ family: 4, value: 0xc0a80164n });

t.test('static data path', async (t) => {
  const lab = await Lab.create();
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, labConfig(lab));
  await lab.makeCgroup('h1');

  const sysctl = async (host: string, key: string) => (await lab.sh(host, `sysctl -n ${key}`)).stdout.trim();

  // Things egress-natd must never touch.
  await lab.sh(
    'h1',
    "nft add table ip foreign && nft add chain ip foreign forwardchain '{ type filter hook forward priority 0; }' && nft add rule ip foreign forwardchain counter",
  );
  await lab.sh(
    'h1',
    'ip rule add pref 5000 from 10.99.0.0/16 lookup 100 && ip route add 10.99.0.0/16 dev eth0 table 100',
  );
  const foreignIntact = async () => {
    const tables = (await lab.sh('h1', 'nft list tables')).stdout;
    const rules = (await lab.sh('h1', 'ip rule show pref 5000')).stdout;
    const routes = (await lab.sh('h1', 'ip route show table 100')).stdout;
    return tables.includes('table ip foreign') && rules.includes('10.99.0.0/16') && routes.includes('10.99.0.0/16');
  };
  const before = {
    ignore: await sysctl('h2', 'net.ipv4.conf.eth0.arp_ignore'),
    announce: await sysctl('h2', 'net.ipv4.conf.eth0.arp_announce'),
  };

  t.equal(await lab.probe('c1', ECHO.inPolicy), '10.10.1.2', 'before apply, the container leaves with its own address');

  await t.test('plan -o nft is a file nft -f takes', async (t) => {
    const plan = await lab.egress('h2', ['plan', '-c', cfg, '-n', 'h2', '--owner', `${FIP_A}=h2`]);
    const file = join(lab.dir, 'plan.nft');
    writeFileSync(file, plan.stdout);
    const r = await lab.sh('h2', `nft -c -f ${file}`, { allowFail: true });
    t.equal(r.code, 0, r.stderr);
  });

  await applyAll(lab, cfg, { [FIP_A]: 'h2', [FIP_B]: 'h2' });

  await t.test('selected traffic leaves with its floating IP', async (t) => {
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A, 'container behind h1 (CIDR source)');
    t.equal(await lab.probe('h1', ECHO.inPolicy, { cgroup: true }), FIP_A, 'local process in a cgroup on h1');
    t.equal(
      await lab.probe('h2', ECHO.inPolicy, { cgroup: true }),
      FIP_A,
      'local process in a cgroup on the owner itself',
    );
  });

  await t.test('two policies, two egress IPs, one owner: each its own IP', async (t) => {
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A);
    t.equal(await lab.probe('c2', ECHO.inPolicy), FIP_B);
  });

  await t.test('other traffic leaves without the floating IP', async (t) => {
    t.equal(await lab.probe('c1', ECHO.excluded), '10.10.1.2', 'excluded destination');
    t.equal(await lab.probe('c1', ECHO.other), '10.10.1.2', 'destination outside the policy');
    t.equal(await lab.probe('h1', ECHO.inPolicy), '192.168.1.1', 'a process outside the cgroup');
    t.equal(await lab.probe('h3', ECHO.inPolicy), '192.168.1.3', 'another host');
  });

  await t.test('ARP: only the owner answers, with the virtual MAC', async (t) => {
    const r = await lab.sh('r', `arping -c 3 -w 3 -I eth0 ${FIP_A}`, { allowFail: true });
    const macs = new Set([...r.stdout.matchAll(/\[([0-9a-f:]+)\]/gi)].map((m) => m[1]!.toLowerCase()));
    t.same([...macs], [MAC_A], "replies come from one MAC, the floating IP's", { stdout: r.stdout });
    const own = await lab.sh('r', 'arping -c 2 -w 2 -I eth0 192.168.1.2', { allowFail: true });
    t.notOk(own.stdout.toLowerCase().includes(MAC_A), "the macvlan does not answer for the host's own address");
    const neigh = (await lab.sh('r', `ip neigh show ${FIP_A}`)).stdout;
    t.match(neigh, MAC_A, "the router's neighbour entry holds the virtual MAC");
    const fdb = (await lab.sh('sw', `bridge fdb show br br0 | grep -i ${MAC_A}`)).stdout;
    t.match(fdb, 'dev p-h2', 'and the segment delivers that MAC to the owner');
  });

  await t.test('a second apply changes nothing', async (t) => {
    for (const h of lab.hosts) {
      const r = await lab.egress(h.name, [
        'apply',
        '-c',
        cfg,
        '-n',
        h.name,
        '--owner',
        `${FIP_A}=h2`,
        '--owner',
        `${FIP_B}=h2`,
      ]);
      t.match(r.stdout, /^no change: node h\d already matches the plan/, h.name);
    }
  });

  await t.test('the owner moves: traffic keeps its egress IP, the MAC moves with it', async (t) => {
    await applyAll(lab, cfg, { [FIP_A]: 'h3', [FIP_B]: 'h2' });
    t.equal(
      (await lab.sh('h2', `ip -br link show ${IF_A}`, { allowFail: true })).code !== 0,
      true,
      'the old owner no longer has the macvlan',
    );
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A);
    t.equal(await lab.probe('c2', ECHO.inPolicy), FIP_B);
    t.match(
      (await lab.sh('sw', `bridge fdb show br br0 | grep -i ${MAC_A}`)).stdout,
      'dev p-h3',
      "gratuitous ARP moved the MAC to the new owner's port",
    );
    t.match((await lab.sh('r', `ip neigh show ${FIP_A}`)).stdout, MAC_A);
  });

  /** `apply` on `host` with the owners of this part of the test: .100 on h3, .101 on h2. */
  const applyOwned = (host: string) =>
    lab.egress(host, ['apply', '-c', cfg, '-n', host, '--owner', `${FIP_A}=h3`, '--owner', `${FIP_B}=h2`]);

  await t.test('drift is repaired', async (t) => {
    await lab.sh('h3', `ip addr del ${FIP_A}/32 dev ${IF_A}`);
    t.equal(
      await lab.probe('c1', ECHO.inPolicy, { timeoutS: 1 }),
      undefined,
      'without its address the owner drops the traffic',
    );
    const r = await applyOwned('h3');
    t.match(r.stdout, `add address ${FIP_A}/32 to ${IF_A}`);
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A, 'repaired');

    await lab.sh('h1', 'nft delete table inet egress_natd');
    t.equal(await lab.probe('c1', ECHO.inPolicy), '10.10.1.2', 'without the table, h1 no longer steers');
    const r2 = await applyOwned('h1');
    t.match(r2.stdout, 'nft: create table inet egress_natd');
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A, 'repaired');

    await lab.sh('h1', 'nft flush chain inet egress_natd prerouting');
    const r3 = await applyOwned('h1');
    t.match(r3.stdout, 'nft: replace chain prerouting');
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A, 'a flushed chain is refilled');

    await lab.sh('h1', 'ip rule del pref 7601');
    const r4 = await applyOwned('h1');
    t.match(r4.stdout, 'add ip rule pref 7601');
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A, 'a deleted ip rule comes back');
  });

  t.ok(await foreignIntact(), 'a foreign nft table and foreign ip rules survive apply');

  await t.test('release removes everything and restores sysctls', async (t) => {
    for (const h of lab.hosts) await lab.egress(h.name, ['release']);
    for (const h of lab.hosts) {
      const n = h.name;
      t.notMatch((await lab.sh(n, 'nft list tables')).stdout, 'egress_natd', `${n}: no table`);
      t.notMatch((await lab.sh(n, 'ip rule')).stdout, /^76\d\d:/m, `${n}: no rules`);
      t.equal(
        (await lab.sh(n, 'ip route show table all | grep -E "table 7[6-8][0-9]{2}\\b" || true')).stdout.trim(),
        '',
        `${n}: no route tables`,
      );
      t.equal((await lab.sh(n, 'ip -br link show type macvlan')).stdout.trim(), '', `${n}: no macvlans`);
      t.notMatch((await lab.sh(n, 'ip -br addr')).stdout, /192\.168\.1\.10[01]/, `${n}: no floating IPs`);
    }
    t.same(
      {
        ignore: await sysctl('h2', 'net.ipv4.conf.eth0.arp_ignore'),
        announce: await sysctl('h2', 'net.ipv4.conf.eth0.arp_announce'),
      },
      before,
      'sysctls restored',
    );
    t.ok(await foreignIntact(), 'the foreign table and rules survive release');
    t.equal(await lab.probe('c1', ECHO.inPolicy), '10.10.1.2', 'traffic is back to plain routing');
    t.match((await lab.egress('h2', ['release'])).stdout, 'nothing to release', 'release is idempotent');
  });
});
