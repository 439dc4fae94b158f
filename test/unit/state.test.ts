import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StateStore } from '../../src/dataplane/state.js';

// The state file: what release restores, and the last plan's record that parking and the next start use.

t.test('the record of the last plan survives a round trip; one of another shape is ignored', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'enat-state-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new StateStore(dir);
  t.same(await store.load(), { sysctls: {} }, 'nothing yet');
  const applied = { node: 'h1', owners: { '192.168.1.100': 'h2' }, indexes: { '192.168.1.100': 1 } };
  await store.save({ sysctls: { 'net/ipv4/conf/eth0/arp_ignore': '0' }, applied });
  t.same(await store.load(), { sysctls: { 'net/ipv4/conf/eth0/arp_ignore': '0' }, applied });
  writeFileSync(store.file, JSON.stringify({ sysctls: {}, applied: { node: 'h1', owners: 'h2' } }));
  t.same(await store.load(), { sysctls: {} }, 'a malformed record is left out');
  await store.clear();
  t.same(await store.load(), { sysctls: {} }, 'release clears it');
});
