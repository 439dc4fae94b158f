import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLUSTER_CONTAINERS, CLUSTER_HOSTS, clusterConfig, settled, waitUntil } from '../../lab/cluster.js';
import { Lab } from '../../lab/lab.js';

// A node whose reconciles keep failing (here: its nft fails) steps back: it hands its
// floating IPs over instead of holding them with a data plane it cannot change, says why,
// and takes part again once a reconcile succeeds.

t.test('a node that cannot reconcile steps back, and returns', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab));
  const broken = join(lab.dir, 'nft-broken');
  const nft = join(lab.dir, 'nft');
  writeFileSync(
    nft,
    `#!/bin/sh\n[ -e '${broken}' ] && { echo 'nft: simulated failure' >&2; exit 1; }\nexec nft "$@"\n`,
    {
      mode: 0o755,
    },
  );
  const names = lab.hosts.map((h) => h.name);
  await Promise.all(names.map((h) => lab.startDaemon(h, cfg, [], h === 'h1' ? { EGRESS_NATD_NFT: nft } : {})));
  const before = await settled(lab, names);
  const held = Object.entries(before.floatingIPs).find(([, owner]) => owner === 'h1')?.[0];
  if (!held) return t.fail(`h1 holds no IP: ${JSON.stringify(before.floatingIPs)}`);

  // Its nft breaks, and its table goes: the repair fails, and so does every retry.
  writeFileSync(broken, '');
  await lab.sh('h1', 'nft delete table inet egress_natd');
  const moved = await waitUntil(
    `${held} to move off h1`,
    async () => {
      const holders = await lab.holders(held);
      return holders.length === 1 && holders[0] !== 'h1' ? holders[0] : undefined;
    },
    15_000,
  );
  t.not(moved, 'h1', `${held} moved to ${moved}`);
  const log = readFileSync(lab.daemonLog('h1'), 'utf8');
  t.match(log, /stepping back: 3 reconciles failed in a row/, 'h1 says why it steps back');
  const s = await lab.status('h2');
  t.equal(s.floatingIPs[held], moved, 'the cluster agrees on the new owner');

  // nft works again: h1 repairs its table and takes part again (it takes nothing back: rule 5).
  writeFileSync(nft, '#!/bin/sh\nexec nft "$@"\n', { mode: 0o755 });
  await waitUntil('h1 to take part again', async () => (await lab.status('h2')).details['h1']?.eligible, 15_000);
  t.match(readFileSync(lab.daemonLog('h1'), 'utf8'), /reconcile works again: taking part again/);
  await settled(lab, names);
  t.equal((await lab.holders(held)).join(), moved, `${held} stays on ${moved}`);
});
