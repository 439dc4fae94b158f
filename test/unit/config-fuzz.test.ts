import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfigText } from '../../src/config/load.js';
import { fakeKeyFile, REPO, rng, validText } from '../helpers.js';

// Mutations of a valid config never crash the validator: every input gives a model
// or diagnostics. A seeded generator keeps failures reproducible.

const NASTY = [
  '',
  '~',
  'null',
  '[]',
  '{}',
  '-1',
  '1e999',
  '0x1f',
  '"\\u0000"',
  '&a',
  '*a',
  '!!binary AA',
  '? x',
  '|',
  '>',
  '0.0.0.0/0',
  '::/0',
  '300.1.1.1',
  'ffff',
  '@',
  '%',
  "'",
  '"',
  '#',
  '\t',
  ': :',
  '- -',
  '999999999999999999999',
];

export function mutate(text: string, r: () => number): string {
  const lines = text.split('\n');
  const n = 1 + Math.floor(r() * 4);
  for (let k = 0; k < n; k++) {
    const i = Math.floor(r() * lines.length);
    const line = lines[i] ?? '';
    switch (Math.floor(r() * 8)) {
      case 0:
        lines.splice(i, 1);
        break;
      case 1:
        lines.splice(i, 0, lines[Math.floor(r() * lines.length)] ?? '');
        break;
      case 2:
        lines[i] = line.replace(/:\s.*$/, `: ${NASTY[Math.floor(r() * NASTY.length)]}`);
        break;
      case 3:
        lines[i] = `${' '.repeat(Math.floor(r() * 6))}${line.trimStart()}`;
        break;
      case 4: {
        const p = Math.floor(r() * line.length);
        lines[i] = line.slice(0, p) + line.slice(p + 1);
        break;
      }
      case 5: {
        const p = Math.floor(r() * line.length);
        lines[i] = line.slice(0, p) + String.fromCharCode(32 + Math.floor(r() * 95)) + line.slice(p);
        break;
      }
      case 6:
        lines[i] = line.replace(/\d+/, String(Math.floor(r() * 1e6)));
        break;
      default:
        lines[i] = line.replace(/[a-z]+/, NASTY[Math.floor(r() * NASTY.length)]!);
        break;
    }
  }
  return lines.join('\n');
}

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
