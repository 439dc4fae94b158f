// YAML for `status` (its default output), written here rather than by a YAML library:
// loading one cost the command more than its answer (a tenth of its run time), and the
// document is plain data (objects, arrays, strings, numbers, booleans, null). Block style;
// a string is plain only where it can be nothing but that string, else double-quoted with
// JSON's escapes, which YAML's double-quoted style reads the same.

export type Plain = string | number | boolean | null | undefined | readonly Plain[] | { readonly [k: string]: Plain };

/** Words YAML 1.1 or 1.2 readers take for booleans or null. */
const SPECIAL = /^(?:true|false|yes|no|on|off|y|n|null|~)$/i;
/** Letters first (no number, date or indicator), then nothing a reader could take for structure. */
const SAFE = /^[A-Za-z_][A-Za-z0-9_./@+-]*(?: [A-Za-z0-9_./@+()-]+)*$/;

const scalarText = (s: string): string => (SAFE.test(s) && !SPECIAL.test(s) ? s : JSON.stringify(s));

function scalar(v: Exclude<Plain, readonly Plain[] | { readonly [k: string]: Plain }>): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return scalarText(v);
  if (typeof v === 'number')
    return Number.isFinite(v) ? String(v) : Number.isNaN(v) ? '.nan' : v > 0 ? '.inf' : '-.inf';
  return String(v);
}

const isArray = (v: Plain): v is readonly Plain[] => Array.isArray(v);
const isObject = (v: Plain): v is { readonly [k: string]: Plain } => typeof v === 'object' && v !== null && !isArray(v);
/** Keys of an object as JSON.stringify keeps them: undefined values are left out. */
const entries = (o: { readonly [k: string]: Plain }) => Object.entries(o).filter(([, v]) => v !== undefined);

function lines(v: Plain, indent: string, out: string[], lead: string): void {
  if (isArray(v)) {
    if (!v.length) return void out.push(`${lead}[]`);
    if (lead) out.push(lead.trimEnd());
    v.forEach((x) => item(x, indent, out));
  } else if (isObject(v)) {
    const kv = entries(v);
    if (!kv.length) return void out.push(`${lead}{}`);
    if (lead) out.push(lead.trimEnd());
    for (const [k, x] of kv) lines(x, `${indent}  `, out, `${indent}${scalarText(k)}: `);
  } else out.push(`${lead}${scalar(v)}`);
}

/** An array item: "- " and the first line of its value on the same line, as YAML writers do. */
function item(v: Plain, indent: string, out: string[]): void {
  const inner: string[] = [];
  if ((isArray(v) && v.length) || (isObject(v) && entries(v).length)) {
    lines(v, `${indent}  `, inner, '');
    // lines() indents the first level of a nested collection by indent + 2: the dash takes that place.
    out.push(`${indent}- ${inner[0]!.slice(indent.length + 2)}`, ...inner.slice(1));
  } else {
    lines(v, indent, inner, '');
    out.push(`${indent}- ${inner[0]}`);
  }
}

/** `v` as a YAML document (block style), ending in a newline. */
export function dumpYaml(v: Plain): string {
  const out: string[] = [];
  lines(v, '', out, '');
  return `${out.join('\n')}\n`;
}
