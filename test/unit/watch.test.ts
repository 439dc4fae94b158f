import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isNftDeletion, rejectsMonitorDestroy, watchKernel, type KernelEvent } from '../../src/dataplane/watch.js';

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

// nftables 1.1.3 (Debian 13) rejects `nft monitor destroy`, which 1.0.6 (Debian 12) takes.
// A stand-in nft first on PATH answers as 1.1.3's parser does; the real 1.1.3 is checked
// in test/lab/machines.test.ts (a deleted table repaired on Debian 13).
t.test('an nft that rejects `monitor destroy`: `nft monitor` is read, deletions only', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'enat-nft-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(
    join(dir, 'nft'),
    `#!/bin/sh
case "$*" in
  "monitor destroy") echo 'Error: syntax error, unexpected destroy, expecting end of file or newline or semicolon' >&2; exit 1 ;;
  monitor) echo 'add table inet egress_natd'; echo 'delete table inet egress_natd'; exec sleep 30 ;;
esac
exit 2
`,
    { mode: 0o755 },
  );
  const path = process.env['PATH'];
  process.env['PATH'] = `${dir}:${path}`;
  t.teardown(() => void (process.env['PATH'] = path));
  const events: KernelEvent[] = [];
  const errors: string[] = [];
  const w = watchKernel(
    (e) => e.source === 'nft' && events.push(e),
    (e) => errors.push(e.message),
  );
  t.teardown(() => w.close());
  await w.ready;
  await sleep(500);
  t.same(events, [{ source: 'nft', line: 'delete table inet egress_natd' }], 'the deletion, not the addition');
  t.equal(errors.length, 1, `one message: ${errors.join('; ')}`);
  t.match(
    errors[0],
    /nft monitor destroy is refused by this nftables .*unexpected destroy.*reading `nft monitor` instead/,
  );
});

t.test('which lines of `nft monitor` are deletions', async (t) => {
  t.ok(isNftDeletion('delete table inet egress_natd'));
  t.ok(isNftDeletion('delete element inet egress_natd dst_1 { 203.0.113.0/24 }'));
  t.notOk(isNftDeletion('add rule inet egress_natd postrouting meta mark 0x1 snat ip to 192.168.1.100'));
  t.notOk(isNftDeletion('# new generation 9 by process 5618 (nft)'));
  t.ok(rejectsMonitorDestroy('Error: syntax error, unexpected destroy, expecting end of file or newline or semicolon'));
  t.notOk(rejectsMonitorDestroy('Error: Could not process rule: Operation not permitted'));
});
