import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { watchKernel } from '../../src/dataplane/watch.js';

// A monitor that cannot be started (its program missing) is reported and tried again;
// an 'error' event without a handler would crash the daemon.

t.test('a monitor that cannot be spawned is an error, not a crash, and is tried again', async (t) => {
  const path = process.env['PATH'];
  process.env['PATH'] = '/nonexistent';
  t.teardown(() => void (process.env['PATH'] = path));
  const errors: string[] = [];
  const w = watchKernel(
    () => t.fail('no event'),
    (e) => errors.push(e.message),
  );
  t.teardown(() => w.close());
  await t.rejects(w.ready, /ENOENT/, 'ready says the monitors did not start');
  await sleep(1500);
  t.ok(errors.length >= 4, `both monitors failed, and failed again a second later: ${errors.join('; ')}`);
  t.ok(
    errors.every((m) => /ENOENT/.test(m)),
    'each error says why',
  );
});
