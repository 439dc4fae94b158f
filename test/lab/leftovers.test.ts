import t from 'tap';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLUSTER_CONTAINERS, CLUSTER_HOSTS, clusterConfig, waitUntil } from '../../lab/cluster.js';
import { Lab, run } from '../../lab/lab.js';

// Issue 10, item 7: nothing the daemon starts may outlive it, even when it is killed
// with SIGKILL and cannot clean up: not the `ip monitor` and `nft monitor` children,
// not an arping. The arping here is a stand-in that lingers (it ignores the SIGTERM
// the daemon sends it after 150 ms), so that one is running when the daemon dies.

/** The processes in a lab host's network namespace: pid and command name. */
async function processes(lab: Lab, host: string): Promise<string[]> {
  const pids = (await run(['ip', 'netns', 'pids', lab.ns(host)])).stdout.split(/\s+/).filter(Boolean);
  return pids.flatMap((p) => {
    try {
      return [`${p} ${readFileSync(`/proc/${p}/comm`, 'utf8').trim()}`];
    } catch {
      return []; // gone meanwhile
    }
  });
}

t.test('kill -9 of the daemon leaves no process of its own behind', async (t) => {
  const lab = await Lab.create(CLUSTER_HOSTS, CLUSTER_CONTAINERS);
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, clusterConfig(lab, { port: 7637 }));
  const arping = join(lab.dir, 'arping');
  writeFileSync(arping, "#!/bin/sh\ntrap '' TERM\nexec sleep 60\n");
  chmodSync(arping, 0o755);

  await lab.startDaemon('h1', cfg, [], { EGRESS_NATD_ARPING: arping });
  const running = await waitUntil(
    'the monitors and a (lingering) arping to run',
    async () => {
      const ps = await processes(lab, 'h1');
      return ['ip', 'nft', 'sleep'].every((c) => ps.some((p) => p.endsWith(` ${c}`))) && ps;
    },
    20_000,
  );
  t.ok(running.length >= 4, `running: ${running.join(', ')}`);

  await lab.stopDaemon('h1', 'SIGKILL');
  const killed = Date.now();
  let left = await processes(lab, 'h1');
  while (left.length && Date.now() < killed + 1000) left = await processes(lab, 'h1');
  t.same(left, [], `within 1 s of the kill, nothing is left in its namespace (${Date.now() - killed} ms)`);
});
