import { CORE_SCHEMA, load } from 'js-yaml';

// The fast path of config parsing. The positions-tracking parser (`yaml`, with a line
// counter) is what points every message at FILE:LINE:COL, but it takes over a second for
// a file of 100,000 CIDRs; js-yaml takes a tenth of that. A valid config never needs a
// position, so it is parsed fast, validated, and re-parsed with positions only when there
// is something to point at (config/load.ts).
//
// The two parsers must agree on every document the fast path takes. They do for the
// plain YAML a config is written in; the features where they may not (anchors and
// aliases, tags, directives, merge keys, complex keys, YAML 1.1 number forms such as 1_000
// or 0b101) send the text to the full parser instead, and so does anything js-yaml
// rejects. test/unit/config-fast-parse.test.ts holds them to the same result.

const FULL_PARSER_ONLY = new RegExp(
  [
    '[&*!%?]', // anchors, aliases, tags, directives, complex keys
    '<<', // merge keys
    '\\d_\\d|\\b0b[01]', // YAML 1.1 digit groups and binary
    '(?<![\\w.:/])[-+]?(\\d+\\.?\\d*|\\.\\d+)[eE][-+]?\\d+(?![\\w.:/])', // 1e3: a float in YAML 1.2, a string to js-yaml
  ].join('|'),
);

/** The document's data, or undefined when only the full parser may read this text. */
export function fastParse(text: string): { readonly data: unknown } | undefined {
  if (FULL_PARSER_ONLY.test(text)) return undefined;
  try {
    return { data: load(text, { schema: CORE_SCHEMA }) };
  } catch {
    return undefined;
  }
}
