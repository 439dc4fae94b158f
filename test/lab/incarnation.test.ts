import t from 'tap';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLUSTER_HOSTS, clusterConfig, settled, waitUntil } from '../../lab/cluster.js';
import { Lab } from '../../lab/lab.js';

// A restart with the wall clock an hour back (an NTP step, a VM restored from a snapshot),
// made with libfaketime (scripts/install-deps.sh --test): the restarted node's heartbeats
// must still be newer than those its peers heard before, or they drop them as replays.

/** libfaketime's preload library, wherever the multiarch directory is. */
function libfaketime(): string | undefined {
  for (const d of existsSync('/usr/lib') ? readdirSync('/usr/lib') : []) {
    const f = join('/usr/lib', d, 'faketime', 'libfaketime.so.1');
    if (existsSync(f)) return f;
  }
  return undefined;
}

const lib = libfaketime();

t.test(
  'a restart with the clock an hour back is not taken for a replay',
  { skip: lib ? false : 'needs faketime (scripts/install-deps.sh --test)' },
  async (t) => {
    const lab = await Lab.create(CLUSTER_HOSTS.slice(0, 2), []);
    t.teardown(() => lab.destroy());
    const cfg = join(lab.dir, 'config.yaml');
    writeFileSync(cfg, clusterConfig(lab));
    await Promise.all(['h1', 'h2'].map((h) => lab.startDaemon(h, cfg)));
    await settled(lab, ['h1', 'h2']);
    const incarnations = () =>
      readFileSync(lab.daemonLog('h2'), 'utf8')
        .split('\n')
        .filter((l) => l.includes('"started: listening before taking part"'))
        .map((l) => BigInt((JSON.parse(l) as { incarnation: string }).incarnation));

    await lab.stopDaemon('h2');
    await waitUntil('h1 to see h2 Down', async () => (await lab.status('h1')).nodes['h2'] === 'Down');
    const before = (await lab.status('h1')).counters.dropped.replay;
    await lab.startDaemon('h2', cfg, [], {
      LD_PRELOAD: lib!,
      FAKETIME: '-1h',
      // Timers and the Down timeout run on the monotonic clock, which a clock step does not move.
      FAKETIME_DONT_FAKE_MONOTONIC: '1',
    });
    await sleep(2500); // h2 listens 2 s after start; its heartbeats go out from the start
    const [first, second] = incarnations();
    t.comment(`h2's incarnations: ${first} then ${second} (the clock an hour back)`);
    t.ok(
      second !== undefined && first !== undefined && second > first,
      'the restarted node starts with a larger incarnation',
    );
    const up = await waitUntil('h1 to see h2 Up', async () => (await lab.status('h1')).nodes['h2'] === 'Up', 3000).then(
      () => true,
      () => false,
    );
    const dropped = (await lab.status('h1')).counters.dropped.replay - before;
    t.ok(up, "h1 accepts the restarted h2's heartbeats: h2 is Up");
    t.equal(dropped, 0, `h1 dropped none of them as replays (${dropped})`);
    if (up) await settled(lab, ['h1', 'h2']);
  },
);
