import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import { readConfigApart } from '../../src/daemon/config-reader.js';
import { CONFIG_DIR, REPO } from '../helpers.js';

// The daemon reads its config in a process of its own, and gets the same answer as
// reading it in place; the parsers and the schema library never enter the daemon.

const strip = (x: unknown): unknown =>
  JSON.parse(JSON.stringify(x, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)));

t.test('a valid config: the same config (bigints and all) and diagnostics as loadConfig', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'config-reader-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'good.key'), Buffer.from('k'.repeat(64)), { mode: 0o600 });
  const file = join(dir, 'config.yaml');
  writeFileSync(file, readFileSync(join(CONFIG_DIR, 'valid.yaml'), 'utf8'));
  const apart = await readConfigApart(file);
  t.ok(apart.config, 'a config');
  t.same(strip(apart), strip(loadConfig(file)));
  t.equal(typeof apart.config!.policies[0]!.destinations[0]!.base, 'bigint', 'bigints stay bigints');
});

t.test('an invalid config: the same FILE:LINE:COL diagnostics', async (t) => {
  const file = join(CONFIG_DIR, 'invalid', '20-duplicate-node.yaml');
  const apart = await readConfigApart(file);
  t.equal(apart.config, undefined);
  t.ok(apart.diagnostics.length > 0);
  t.same(strip(apart), strip(loadConfig(file)));
});

t.test('a missing file is a diagnostic, not a failure', async (t) => {
  const apart = await readConfigApart('/nonexistent/egress-natd.yaml');
  t.same(strip(apart), strip(loadConfig('/nonexistent/egress-natd.yaml')));
});

/** Every module `egress-natd run` imports (statically or not), following relative and package imports. */
function reachable(entry: string): Set<string> {
  const seen = new Set<string>();
  const walk = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm)) {
      const spec = m[1]!;
      if (spec.startsWith('.')) walk(resolve(dirname(file), spec));
      else seen.add(spec);
    }
  };
  walk(entry);
  return seen;
}

t.test("the daemon's own modules never load the config parsers", async (t) => {
  const loaded = reachable(join(REPO, 'dist/src/cli/run-command.js'));
  t.ok(loaded.has('node:dgram'), 'the walk reaches the heartbeat transport');
  for (const parser of ['zod', 'js-yaml', 'yaml', join(REPO, 'dist/src/config/load.js')])
    t.notOk(loaded.has(parser), `${parser} is not loaded by the daemon`);
  t.ok(reachable(join(REPO, 'dist/src/daemon/config-reader-main.js')).has('zod'), 'the reader loads them');
});
