import t, { type Test } from 'tap';
import { load } from 'js-yaml';
import { parse } from 'yaml';
import { dumpYaml, type Plain } from '../../src/util/yaml-dump.js';

// status's YAML: what YAML readers (js-yaml, and the yaml package, a YAML 1.2 reader)
// read back is exactly the document, whatever its strings hold.

const TRICKY = [
  '',
  ' ',
  'a ',
  ' a',
  'yes',
  'No',
  'ON',
  'y',
  'n',
  'null',
  'Null',
  '~',
  'true',
  'False',
  '0',
  '1.5',
  '-1',
  '0x1f',
  '1e3',
  '.inf',
  '.nan',
  '192.168.1.100',
  '10.10.1.0/24',
  '2026-11-23',
  '2026-11-23T07:52:37Z',
  'a: b',
  'a:b',
  'a #b',
  '#x',
  '- x',
  '-x',
  '? x',
  '[x]',
  '{x}',
  '*x',
  '&x',
  '!x',
  '|',
  '>',
  '%x',
  '@x',
  '`x`',
  "'x'",
  '"x"',
  'a\nb',
  'a\tb',
  'tab\t',
  '\u00e9t\u00e9',
  '\u{1f600}',
  'x\u0000y',
  'back\\slash',
  'h1',
  'taking part (ready)',
  'egress_natd-1.x',
  'node h2 is Down: no heartbeat for 300 ms',
  '=',
  '<<',
  'a, b',
  'a: ',
  'http://x/y',
];

const roundTrips = (t: Test, doc: Plain, what: string) => {
  const text = dumpYaml(doc);
  const json = JSON.parse(JSON.stringify(doc)) as unknown;
  t.same(load(text), json, `${what}: js-yaml reads it back`);
  t.same(parse(text), json, `${what}: yaml (1.2) reads it back`);
};

t.test('every tricky string, as a value, a key and an array item', async (t) => {
  for (const s of TRICKY) roundTrips(t, { [s]: s, list: [s, [s], { [s]: [s] }] }, JSON.stringify(s));
});

t.test('numbers, booleans, null, empty collections, nesting', async (t) => {
  const doc: Plain = {
    n: [0, -1, 1.5, 1e21, 2 ** 53],
    b: [true, false],
    z: null,
    gone: undefined,
    empty: { o: {}, a: [] },
    nested: [[1, [2, []]], [{}], [{ a: { b: [{ c: 1, d: 'x' }] } }]],
  };
  roundTrips(t, doc, 'the mix');
});

t.test('a status-like document reads as people expect: plain where it can be', async (t) => {
  const doc: Plain = {
    node: 'h1',
    ready: true,
    nodes: { h1: 'Up', h2: 'Down' },
    floatingIPs: { '192.168.1.100': 'h1' },
    history: [{ ip: '192.168.1.100', from: 'h2', to: 'h1', outageMs: 287 }],
    snatPorts: {},
    warnings: [],
  };
  t.equal(
    dumpYaml(doc),
    [
      'node: h1',
      'ready: true',
      'nodes:',
      '  h1: Up',
      '  h2: Down',
      'floatingIPs:',
      '  "192.168.1.100": h1',
      'history:',
      '  - ip: "192.168.1.100"',
      '    from: h2',
      '    to: h1',
      '    outageMs: 287',
      'snatPorts: {}',
      'warnings: []',
      '',
    ].join('\n'),
  );
  roundTrips(t, doc, 'status');
});
