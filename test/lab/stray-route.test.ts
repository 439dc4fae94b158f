import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLUSTER_CONTAINERS, CLUSTER_FIPS, CLUSTER_HOSTS, clusterConfig } from '../../lab/cluster.js';
import { Lab } from '../../lab/lab.js';

// Issue 10, item 9: a route in one of egress-natd's tables that the plan does not want
// (someone's `ip route add ... table 7601`) is deleted, whatever its destination; it
// used to be "deleted" as the table's default route, which removed the wanted route
// instead and never converged.

t.test('a stray route in our table is removed, and apply converges', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab));
  const apply = () =>
    lab.egress('h3', ['apply', '-c', cfg, '-n', 'h3', '--owner', `${CLUSTER_FIPS.shop}=h1`, '--no-garp'], {
      allowFail: true,
    });
  t.equal((await apply()).code, 0, 'first apply');
  const table = async () => (await lab.sh('h3', 'ip route show table 7601')).stdout.trim();
  const wanted = await table();
  t.match(wanted, `default via ${CLUSTER_FIPS.shop}`);

  await lab.sh('h3', 'ip route add 10.99.0.0/24 dev eth0 table 7601; ip route add 10.98.0.0/24 dev eth0 table 7601');
  const r = await apply();
  t.equal(r.code, 0, `apply with strays succeeds: ${r.stderr.trim()}`);
  t.equal(await table(), wanted, 'only the wanted route is left');
  const again = await apply();
  t.match(again.stdout, /^no change/, `then nothing is left to do: ${again.stdout.trim()}${again.stderr.trim()}`);
});
