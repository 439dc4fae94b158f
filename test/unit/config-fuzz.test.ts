import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfigText } from '../../src/config/load.js';
import { mutate } from '../config-mutate.js';
import { fakeKeyFile, REPO, rng, validText } from '../helpers.js';

// Mutations of a valid config never crash the validator: every input gives a model
// or diagnostics. A seeded generator keeps failures reproducible.

t.test('5000 mutations never throw', async (t) => {
  const r = rng(20261121);
  const base = validText();
  let valid = 0;
  let invalid = 0;
  for (let i = 0; i < 5000; i++) {
    const text = mutate(base, r);
    let result;
    try {
      result = loadConfigText('fuzz.yaml', text, fakeKeyFile);
    } catch (e) {
      t.fail(`mutation ${i} threw: ${(e as Error).stack}\n---\n${text}`);
      return;
    }
    if (result.config) valid++;
    else {
      invalid++;
      if (!result.diagnostics.some((d) => d.severity === 'error')) t.fail(`mutation ${i}: no model and no error`);
    }
  }
  t.ok(invalid > 1000, `most mutations are invalid (${invalid}); ${valid} stayed valid`);
});

t.test('the check command exits 0 or 2 with no stack trace', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'egress-fuzz-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'good.key'), 'k'.repeat(64), { mode: 0o600 });
  const r = rng(7);
  const base = validText();
  for (let i = 0; i < 40; i++) {
    const file = join(dir, `m${i}.yaml`);
    writeFileSync(file, mutate(base, r));
    const p = spawnSync(join(REPO, 'bin/egress-natd'), ['check', '-c', file], { encoding: 'utf8' });
    if (!(p.status === 0 || p.status === 2) || /\n\s+at /.test(p.stderr)) {
      t.fail(`check on mutation ${i} exited ${p.status}: ${p.stderr}`);
      return;
    }
  }
  t.pass('40 mutated files checked by the binary');
});
