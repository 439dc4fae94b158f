import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { askDaemon, controlPath, serveControl } from '../../src/daemon/control.js';

// One daemon per state dir: a second one must not take the live one's control socket.

t.test('a second daemon on the same state dir is refused; the first keeps answering', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'enctl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const first = await serveControl(dir, async () => 'first');
  t.teardown(() => first.close());
  await t.rejects(
    serveControl(dir, async () => 'second'),
    /another egress-natd is running with the state dir/,
  );
  t.equal(await askDaemon(dir, { cmd: 'status' }), 'first', 'status still reaches the first daemon');
});

t.test('a socket left by a daemon that died is replaced', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'enctl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(controlPath(dir), ''); // nobody listens: connect is refused
  const s = await serveControl(dir, async () => 'new');
  t.teardown(() => s.close());
  t.equal(await askDaemon(dir, { cmd: 'status' }), 'new');
});
