import t, { type Test } from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bigConfig } from '../../bench/plan-apply.js';
import { loadConfigText } from '../../src/config/load.js';
import { fastParse, withFlowLists } from '../../src/config/fast-parse.js';
import { ConfigSource } from '../../src/config/source.js';
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

t.test('the big config of the benchmarks takes the fast path', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'egress-fast-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const text = readFileSync(bigConfig(dir), 'utf8');
  t.ok(fastParse(text), '1,000 policies, 100,000 CIDRs');
  t.ok(withFlowLists(text), 'its CIDR lists are read without js-yaml');
  t.same(withFlowLists(text)!.data, new ConfigSource('big.yaml', text).data, 'as the full parser reads them');
});

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
  const c1 = (v: string) =>
    base.replace(/labels: \{ node-type: egressNat \}/, `labels: { node-type: egressNat, x: ${v} }`);
  cases.push(
    ['a flow list wrapped under its key', base.replace(/floatingIPs: \[(.*?), /, 'floatingIPs: [$1,\n    ')],
    ['a comment glued to a flow map', base.replace(/(labels: \{[^}]*\})/, '$1# c')],
    ['a comment glued to a quoted value', base.replace(/interval: (\S+)/, 'interval: "$1"#c')],
    ['signed hex and octal', base.replace(/^version: 1$/m, 'version: +0x1').replace(/port: \d+/, 'port: -0o7')],
    ['-.5 and +.5 as label values', c1('-.5').replace('egressNat,', 'egressNat, y: +.5,')],
    ['null keys', c1('1').replace('x: 1', 'null: 1, ~: 2')],
    ['a flow key', `${base}\n[a]: x\n`],
    ['a folded scalar with a blank line of spaces', `${base}\nv: >-1\n   \n`],
  );
  for (const [what, text] of cases) sameBothWays(t, text, what);
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
  t.ok(fastPath > 500, `the fast parser took ${fastPath} of them`);
});

/** Both parsers' data for one text: the fast one's, if it takes it, and the full one's (undefined on its errors). */
const both = (text: string) => {
  const fast = fastParse(text);
  const full = new ConfigSource('s.yaml', text);
  return { fast, full: full.syntaxErrors.length ? undefined : full.data };
};
const asText = (v: unknown) =>
  JSON.stringify(v, (_, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? String(x) : x));

t.test('scalar by scalar: what the fast parser takes, it reads as the full one does', async (t) => {
  const pieces = [
    '0',
    '1',
    '7',
    '9',
    '00',
    '.',
    '-',
    '+',
    'e',
    'E',
    'x',
    'o',
    'b',
    '_',
    'a',
    'f',
    'inf',
    'Inf',
    'nan',
    'NaN',
    'null',
    'Null',
    'NULL',
    '~',
    'true',
    'True',
    'FALSE',
    'yes',
    'on',
    ':',
    ' ',
    '#',
    ',',
    '"',
    "'",
    '[',
    ']',
    '{',
    '}',
    '/',
    '\t',
    '0x',
    '0o',
    '1e3',
    '.5',
    '\\',
    '@',
    '`',
    '|',
    '>',
    '!',
    '&',
    '*',
    '%',
    '?',
    '  ',
    '- ',
    '\n',
    '\n  ',
    '\n    ',
    '\r\n',
  ];
  const r = rng(20261122);
  const pick = () => pieces[Math.floor(r() * pieces.length)]!;
  const token = () => Array.from({ length: 1 + Math.floor(r() * 4) }, pick).join('');
  const shapes = [
    (a: string) => `k: ${a}\n`,
    (a: string, b: string) => `k: [${a}, ${b}]\n`,
    (a: string) => `${a}: v\n`,
    (a: string, b: string) => `k: { ${a}: ${b} }\n`,
    (a: string, b: string) => `k:\n  - ${a}\n  - ${b}\n`,
    (a: string, b: string) => `k:\n  ${a}: ${b}\n`,
    (a: string, b: string) => `a:\n  b: ${a}\n  c: [${b}]\nd: ${a}${b}\n`,
    // Flow lists of words and one-pair maps: what fast-parse.ts reads without js-yaml.
    (a: string, b: string) => `k: [x/y, ${a}, { c: ${b} }, z]\n`,
    (a: string, b: string) => `k:\n  - [${a}, w]\n  - [{ ${a}: ${b} }, v]\n`,
  ];
  let taken = 0;
  for (let i = 0; i < 50000; i++) {
    const text = shapes[i % shapes.length]!(token(), token());
    const { fast, full } = both(text);
    if (!fast) continue;
    taken++;
    if (asText(fast.data) !== asText(full))
      return void t.fail(`the parsers disagree on ${JSON.stringify(text)}`, {
        fast: asText(fast.data),
        full: asText(full),
      });
  }
  t.ok(taken > 8000, `the fast parser took ${taken} of 50000`);
});

t.test('flow lists read without js-yaml: only where YAML reads them as lists of strings', async (t) => {
  const lists: [string, string, boolean][] = [
    ['words and one-pair maps', 'k: [a, 10.0.0.0/24, { cidr: 10.1.0.0/16 }, {x:  y}]\n', true],
    ['in a block sequence and nested', 'k:\n  - [a, b]\n  - [[c, d], { e: f }]\n', true],
    ['a number, a bool, a null: left to js-yaml', 'k: [a, 1]\nl: [true, b]\nm: [Null, c]\nn: [{ a: 0x1 }]\n', false],
    ['inside a quoted scalar', 'k: "x, [a, b]"\n', false],
    ['inside a plain scalar', 'k: x- [a, b]\n', false],
    ['inside a comment', 'k: v\n# l: [a, b]\n', false],
    ['glued to a colon: a plain scalar', 'k:[a, b]\n', false],
    ['a flow list as a key', 'k: { [a, b]: c }\n', false],
    ['a trailing comma', 'k: [a, b, ]\n', false],
    ['an empty item', 'k: [a, , b]\n', false],
    ['a two-pair map', 'k: [{ a: b, c: d }]\n', false],
    ['CRLF line ends', 'k: [a, b]\r\nl: c\r\n', true],
    ['the marker in the text', 'k: [a, b]\nl: __enat_list_0__\n', false],
  ];
  for (const [what, text, taken] of lists) {
    const { fast, full } = both(text);
    t.equal(!!withFlowLists(text), taken, `${what}: ${taken ? 'read here' : 'not read here'}`);
    if (fast) t.equal(asText(fast.data), asText(full), `${what}: read as the full parser reads it`);
  }
});
