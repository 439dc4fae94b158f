import { FAILSAFE_SCHEMA, load, Type } from 'js-yaml';

// The fast path of config parsing. The positions-tracking parser (`yaml`, with a line
// counter) is what points every message at FILE:LINE:COL, but it takes over a second for
// a file of 100,000 CIDRs; js-yaml takes a tenth of that. A valid config never needs a
// position, so it is parsed fast, validated, and parsed again with positions only when
// there is something to point at (config/load.ts).
//
// The two parsers must agree on every document the fast path takes:
// - plain scalars resolve with the very rules of the `yaml` library's YAML 1.2 core
//   schema (the regular expressions below are its own), not with js-yaml's;
// - the syntax where the two libraries are known to differ goes to the full parser:
//   anchors, aliases, tags, directives, complex and merge keys, block scalars, a flow
//   collection or a quoted scalar left open at the end of a line, a flow collection used
//   as a key, tabs, a comment not separated
//   from what precedes it, and keys that are null or empty;
// - anything js-yaml rejects goes to the full parser too.
// test/unit/config-fast-parse.test.ts holds them to the same result, scalar by scalar.

/**
 * One implicit type per tag (js-yaml keeps one per tag): the first of `forms` whose test matches constructs the value.
 * Every plain scalar (100,000 CIDRs) is tried against every type: one expression of all the forms answers that.
 */
const scalar = (tag: string, forms: readonly (readonly [RegExp, (s: string) => unknown])[]) => {
  const any = new RegExp(forms.map(([test]) => test.source).join('|'));
  return new Type(`tag:yaml.org,2002:${tag}`, {
    kind: 'scalar',
    resolve: (s: unknown) => typeof s === 'string' && any.test(s),
    construct: (s: string) => forms.find(([test]) => test.test(s))![1](s),
  });
};

/** The `yaml` library's core schema (yaml/dist/schema/core, common/null), for js-yaml. */
const IMPLICIT = [
  scalar('null', [[/^(?:~|[Nn]ull|NULL)?$/, () => null]]),
  scalar('bool', [[/^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/, (s) => s[0] === 't' || s[0] === 'T']]),
  scalar('int', [
    [/^0o[0-7]+$/, (s) => parseInt(s.substring(2), 8)],
    [/^[-+]?[0-9]+$/, (s) => parseInt(s, 10)],
    [/^0x[0-9a-fA-F]+$/, (s) => parseInt(s.substring(2), 16)],
  ]),
  scalar('float', [
    [
      /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/,
      (s) => (s.slice(-3).toLowerCase() === 'nan' ? NaN : s.startsWith('-') ? -Infinity : Infinity),
    ],
    [/^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/, parseFloat],
    [/^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/, parseFloat],
  ]),
];
const YAML_CORE = FAILSAFE_SCHEMA.extend({ implicit: IMPLICIT });

const FULL_PARSER_ONLY = new RegExp(
  [
    '[&*!%?]', // anchors, aliases, tags, directives, complex keys
    '<<', // merge keys
    '\\S#', // a comment glued to a token
    ':[ \\t]*[|>]', // block scalars
    '[\\]}][ \\t]*:(?:[ \\t]|$)', // a flow collection as a key
    '^[ \\t]*(?:-[ \\t]+)?(?:~|null|Null|NULL)?[ \\t]*:(?:[ \\t]|$)', // a null or empty key
    '-[ \\t]*(?:#.*)?$', // a line ending in a dash: an empty entry, or a nested sequence to come
    '\\t', // tabs, which YAML allows in some places only
  ].join('|'),
  'm',
);

/**
 * A line the fast parser may read otherwise than the full one: one that leaves a flow
 * collection or a quoted scalar open (the two differ on how the next lines must be
 * indented), or that uses a flow collection as a key inside a flow map. (Counted without
 * regard to quoting: a line that only looks so goes to the full parser, which is slower,
 * never wrong.)
 */
function unsafeLine(line: string): boolean {
  const open: string[] = [];
  let keyNext = false;
  let doubles = 0;
  let singles = 0;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if ((c === '[' || c === '{') && keyNext) return true;
    if (c === '[' || c === '{') open.push(c);
    else if (c === ']' || c === '}') open.pop();
    else if (c === '"' && line[i - 1] !== '\\') doubles++;
    else if (c === "'") singles++;
    // In a flow map, a key comes after '{' or ',' (and blanks).
    if (c === '{' || (c === ',' && open.at(-1) === '{')) keyNext = true;
    else if (c !== ' ' && c !== '\t') keyNext = false;
  }
  return open.length > 0 || doubles % 2 === 1 || singles % 2 === 1;
}

/** A key that js-yaml makes of a null, empty or collection key, where the full parser makes another or refuses it. */
function hasOddKey(data: unknown): boolean {
  if (data === null || typeof data !== 'object') return false;
  if (Array.isArray(data)) return data.some(hasOddKey);
  const map = data as Record<string, unknown>;
  return Object.keys(map).some((k) => k === '' || k === 'null' || k.includes('[object Object]') || hasOddKey(map[k]));
}

/** The document's data, or undefined when only the full parser may read this text. */
export function fastParse(text: string): { readonly data: unknown } | undefined {
  return (!text.includes(LIST_MARK) && withFlowLists(text)) || parsed(text);
}

function parsed(text: string): { readonly data: unknown } | undefined {
  if (FULL_PARSER_ONLY.test(text) || text.split('\n').some(unsafeLine)) return undefined;
  let data: unknown;
  try {
    data = load(text, { schema: YAML_CORE });
  } catch {
    return undefined;
  }
  return hasOddKey(data) ? undefined : { data };
}

// The CIDR lists are most of a big config's text: 100,000 CIDRs cost js-yaml about 60 ms
// and as much again in garbage. A one-line flow list whose items are all plain words
// (letters, digits, ".", "/", "-", "_") or one-pair flow maps of such words, `[10.0.0.0/24,
// { cidr: 10.1.0.0/16 }]`, is read here instead: js-yaml parses the text with a marker in
// its place, and the list goes back where the marker is. Both parsers read such a list as
// these very strings (a word that YAML's core schema reads otherwise, `1`, `true`, `null`,
// leaves the list to js-yaml). Where a marker is not read back exactly (a list that was
// inside a quoted or plain scalar, or a comment, after all), the whole text goes the usual way.
const LIST_MARK = '__enat_list_';
const WORD = '[0-9A-Za-z][0-9A-Za-z._/-]*';
const LIST_ITEM = `[ ]*(?:${WORD}|\\{[ ]*${WORD}:[ ]+${WORD}[ ]*\\})[ ]*`;
/** A flow list where YAML may start one (line start, after ": " or "- ", inside a flow collection), ending where it may end. */
const FLOW_LIST = new RegExp(
  `(?<=^|[:-][ ]+|[\\[{,][ ]*)\\[(${LIST_ITEM}(?:,${LIST_ITEM})*)\\](?=[ ]*(?:[,\\]}]|$))`,
  'gm',
);
const MARKED = new RegExp(`^${LIST_MARK}(\\d+)__$`);
/**
 * Whether js-yaml (and the full parser) would read a plain word as anything but a string.
 * No null, bool, int or float of the core schema has a "/": a CIDR needs no test.
 */
const notAString = (word: string) => !word.includes('/') && IMPLICIT.some((t) => t.resolve(word));

/** The document's data with its flow lists read here; undefined when it has none, or they were not lists after all. */
export function withFlowLists(text: string): { readonly data: unknown } | undefined {
  const lists: (string | Record<string, string>)[][] = [];
  const marked = text.replace(FLOW_LIST, (whole: string, inner: string) => {
    const items = inner.split(',').map(listItem);
    if (items.some((i) => i === undefined)) return whole;
    lists.push(items as (string | Record<string, string>)[]);
    return `[${LIST_MARK}${lists.length - 1}__]`;
  });
  if (!lists.length) return undefined;
  const r = parsed(marked);
  if (!r) return undefined;
  let restored = 0;
  const restore = (v: unknown): unknown => {
    if (typeof v === 'string') {
      if (v.includes(LIST_MARK)) restored = NaN; // a marker inside a scalar: the list was not a list
      return v;
    }
    if (v === null || typeof v !== 'object') return v;
    if (Array.isArray(v)) {
      const m = v.length === 1 && typeof v[0] === 'string' ? MARKED.exec(v[0]) : null;
      if (m) {
        restored++;
        return lists[Number(m[1])];
      }
      return v.map(restore);
    }
    const map = v as Record<string, unknown>;
    for (const k of Object.keys(map)) {
      if (k.includes(LIST_MARK)) restored = NaN;
      map[k] = restore(map[k]);
    }
    return map;
  };
  const data = restore(r.data);
  return restored === lists.length ? { data } : undefined;
}

/** One item of a flow list: a word, or a one-pair map of words; undefined for anything YAML reads otherwise. */
function listItem(text: string): string | Record<string, string> | undefined {
  let start = 0;
  let end = text.length;
  while (text.charCodeAt(start) === 32) start++;
  while (text.charCodeAt(end - 1) === 32) end--;
  if (text[start] !== '{') {
    const word = text.slice(start, end);
    return notAString(word) ? undefined : word;
  }
  const colon = text.indexOf(':', start);
  const key = text.slice(start + 1, colon).trim();
  const value = text.slice(colon + 1, end - 1).trim();
  return notAString(key) || notAString(value) ? undefined : { [key]: value };
}
