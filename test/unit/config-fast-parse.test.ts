import t, { type Test } from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigText } from '../../src/config/load.js';
import { fastParse } from '../../src/config/fast-parse.js';
import { mutate } from '../config-mutate.js';
import { CONFIG_DIR, fakeKeyFile, rng, validText } from '../helpers.js';

// The fast parser (js-yaml, no positions) and the full one (yaml, with positions) must
// give the same result, model and messages, for every text: the fast path is only a way
// to skip positions when nothing needs one (src/config/fast-parse.ts).

const shown = (text: string, fast: boolean) =>
  JSON.stringify(loadConfigText('c.yaml', text, fakeKeyFile, fast), (_, v: unknown) =>
    typeof v === 'bigint' ? `${v}n` : v,
  );

const sameBothWays = (t: Test, text: string, what: string) => t.equal(shown(text, true), shown(text, false), what);

t.test('the corpus: valid and invalid configs', async (t) => {
  sameBothWays(t, validText(), 'valid.yaml');
  t.ok(fastParse(validText()), 'the valid config takes the fast path');
  const dir = join(CONFIG_DIR, 'invalid');
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.yaml')))
    sameBothWays(t, readFileSync(join(dir, f), 'utf8'), f);
});

t.test('where YAML parsers may disagree, the full parser decides', async (t) => {
  const base = validText();
  const cases: [string, string][] = [
    ['port: 1_000 (YAML 1.1 digit groups)', base.replace(/port: \d+/, 'port: 7_607')],
    ['binary int', base.replace(/missed: \d+/, 'missed: 0b11')],
    ['anchor and alias', `${base}\nextra: &a 1\nmore: *a\n`],
    ['a tag', base.replace(/missed: \d+/, 'missed: !!str 3')],
    ['a complex key', `${base}\n? [a, b]\n: c\n`],
    ['a merge key', `${base}\nx: { <<: { a: 1 } }\n`],
    ['True and ~', base.replace(/noGateway: \w+/, 'noGateway: True').replace(/missed: \d+/, 'missed: ~')],
    ['a quoted number', base.replace(/missed: (\d+)/, 'missed: "$1"')],
    ['a duplicate key', base.replace(/^version: 1$/m, 'version: 1\nversion: 1')],
    ['two documents', `${base}\n---\nversion: 1\n`],
    ['hex and octal', base.replace(/missed: \d+/, 'missed: 0x3').replace(/port: \d+/, 'port: 0o17')],
  ];
  for (const [what, text] of cases) sameBothWays(t, text, what);
  t.notOk(fastParse(cases[0]![1]), 'digit groups go to the full parser');
  t.notOk(fastParse(cases[2]![1]), 'aliases go to the full parser');
});

t.test('3000 mutations give the same result both ways', async (t) => {
  const r = rng(20261122);
  const base = validText();
  let fastPath = 0;
  for (let i = 0; i < 3000; i++) {
    const text = mutate(base, r);
    if (fastParse(text)) fastPath++;
    const a = shown(text, true);
    const b = shown(text, false);
    if (a !== b) return void t.fail(`mutation ${i} differs`, { text, fast: a.slice(0, 800), full: b.slice(0, 800) });
  }
  t.ok(fastPath > 1000, `the fast parser took ${fastPath} of them`);
});
