import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ClusterNode } from '../../src/cluster/node.js';
import { StateStore } from '../../src/dataplane/state.js';
import { Applier, STEP_BACK_AFTER_FAILURES } from '../../src/daemon/applier.js';
import type { Planner } from '../../src/daemon/planner.js';
import { silentNotifier } from '../../src/daemon/sdnotify.js';
import { Telemetry } from '../../src/daemon/telemetry.js';
import { loadValid } from '../helpers.js';

// A decision whose planning throws is a failed reconcile like any other: counted,
// retried, and after three in a row the node steps back. Nothing escapes the loop.

t.test('a planner that throws: counted, retried, the node steps back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'applier-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = pino({ level: 'silent' });
  const node = new ClusterNode(loadValid(), 'worker1', [Buffer.alloc(32, 1)], 1n);
  node.setCondition({ listened: true });
  const telemetry = new Telemetry(node, silentNotifier, log);
  const planner = {
    plan: () => Promise.reject(new Error('no config with digest 00 to plan with')),
  } as unknown as Planner;
  let scheduled = 0;
  let changes = 0;
  const applier = new Applier({
    node,
    planner,
    state: new StateStore(dir),
    log,
    telemetry,
    notifier: silentNotifier,
    sendHeartbeat: () => undefined,
    schedule: () => scheduled++,
    steppingBackChanged: () => changes++,
  });
  for (let i = 1; i <= STEP_BACK_AFTER_FAILURES; i++) {
    await t.resolves(applier.apply(node.decide(i), false), `failure ${i} does not escape`);
    t.equal(telemetry.counters.reconcileErrors, i, 'counted as a failed reconcile');
  }
  t.ok(applier.steppingBack, `stepping back after ${STEP_BACK_AFTER_FAILURES} failures in a row`);
  t.equal(changes, 1, 'the daemon is told once');
  t.equal(applier.runningMs(), 0, 'nothing runs any more (the watchdog pings again)');
  await new Promise((r) => setTimeout(r, 1100));
  t.ok(scheduled >= STEP_BACK_AFTER_FAILURES, 'each failure asks for a retry');
});
