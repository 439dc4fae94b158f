import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyAll as applyEverywhere, labConfig } from '../../lab/config.js';
import { ECHO, Lab } from '../../lab/lab.js';

// cluster.noGateway: what selected traffic gets while its egress IP has no owner.

t.test('noGateway', async (t) => {
  const lab = await Lab.create();
  t.teardown(() => lab.destroy());
  await lab.makeCgroup('h1');
  const applyAll = async (mode: 'drop' | 'masquerade') => {
    const cfg = join(lab.dir, `${mode}.yaml`);
    writeFileSync(cfg, labConfig(lab, { noGateway: mode }));
    await applyEverywhere(lab, cfg);
  };

  await t.test('drop: nothing of the policy leaves', async (t) => {
    await applyAll('drop');
    const seenBefore = lab.seen.length;
    t.equal(await lab.probe('c1', ECHO.inPolicy, { timeoutS: 1 }), undefined, 'container traffic is dropped');
    t.equal(await lab.probe('c2', ECHO.inPolicy, { timeoutS: 1 }), undefined, 'the other policy too');
    t.equal(
      await lab.probe('h1', ECHO.inPolicy, { cgroup: true, timeoutS: 1 }),
      undefined,
      'cgroup traffic is dropped',
    );
    t.equal(lab.seen.length, seenBefore, 'the echo server saw nothing');
    t.equal(await lab.probe('c1', ECHO.excluded), '10.10.1.2', 'unselected traffic still flows');
  });

  await t.test('masquerade: the node IP', async (t) => {
    await applyAll('masquerade');
    t.equal(await lab.probe('c1', ECHO.inPolicy), '192.168.1.1', "container behind h1 leaves with h1's IP");
    t.equal(await lab.probe('c2', ECHO.inPolicy), '192.168.1.3', "container behind h3 leaves with h3's IP");
    t.equal(await lab.probe('h1', ECHO.inPolicy, { cgroup: true }), '192.168.1.1', 'local process');
    t.equal(await lab.probe('c1', ECHO.other), '10.10.1.2', 'unselected traffic is not masqueraded');
  });

  for (const h of lab.hosts) await lab.egress(h.name, ['release']);
});
