import t from 'tap';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Gratuitous ARP repeats, with a stand-in arping that records each call (no frame is
// sent): every announcement is made while its link holds the address, a failure is
// reported, and a link that is gone or lost the address (the IP given up at once, by a
// handover or a step back) stops the repeats quietly.

const dir = mkdtempSync(join(tmpdir(), 'egress-arp-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const calls = join(dir, 'calls');
const fake = join(dir, 'arping');
writeFileSync(fake, `#!/bin/sh\necho "$@" >> ${calls}\nexit "\${FAKE_ARPING_EXIT:-0}"\n`);
chmodSync(fake, 0o755);
process.env['EGRESS_NATD_ARPING'] = fake;
const { sendGratuitousArp } = await import('../../src/dataplane/arp.js');
const called = () => (existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n').length : 0);

t.test('each announcement while the link exists', async (t) => {
  rmSync(calls, { force: true });
  const errors: string[] = [];
  await sendGratuitousArp('lo', '127.0.0.1', (e) => errors.push(e.message), 2);
  t.equal(called(), 2, 'two announcements');
  t.same(errors, []);
});

t.test('a failure is reported', async (t) => {
  rmSync(calls, { force: true });
  process.env['FAKE_ARPING_EXIT'] = '2';
  t.teardown(() => delete process.env['FAKE_ARPING_EXIT']);
  const errors: string[] = [];
  await sendGratuitousArp('lo', '127.0.0.1', (e) => errors.push(e.message), 1);
  t.equal(errors.length, 1, errors[0] ?? 'no error');
});

t.test('a link that no longer holds the address: no announcement and no error', async (t) => {
  rmSync(calls, { force: true });
  process.env['FAKE_ARPING_EXIT'] = '2';
  t.teardown(() => delete process.env['FAKE_ARPING_EXIT']);
  const errors: string[] = [];
  await sendGratuitousArp('lo', '192.0.2.1', (e) => errors.push(e.message), 2);
  t.equal(called(), 0);
  t.same(errors, []);
});

t.test('a link that is gone: no announcement and no error', async (t) => {
  rmSync(calls, { force: true });
  process.env['FAKE_ARPING_EXIT'] = '2';
  t.teardown(() => delete process.env['FAKE_ARPING_EXIT']);
  const errors: string[] = [];
  await sendGratuitousArp('enatgone0', '192.0.2.1', (e) => errors.push(e.message), 2);
  t.equal(called(), 0);
  t.same(errors, []);
});
