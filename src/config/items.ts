import type { z } from 'zod';
import type { Diagnostic } from './diagnostics.js';
import type { ConfigSource, Path } from './source.js';

// One item of the config file at a time: its structure checked by zod, every issue turned
// into a positioned diagnostic, and the names of a list checked to be unique.

export const pathText = (path: Path): string =>
  path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

const article = (t: string): string =>
  ({
    object: 'a mapping',
    record: 'a mapping',
    array: 'a list',
    string: 'a string',
    number: 'a number',
    boolean: 'a boolean',
  })[t] ?? t;

/** Translates zod's structural issues into positioned messages. */
function shapeDiagnostics(src: ConfigSource, base: Path, issues: readonly z.core.$ZodIssue[]): Diagnostic[] {
  return issues.flatMap((issue): Diagnostic[] => {
    const path = [...base, ...(issue.path as (string | number)[])];
    const where = pathText(path);
    switch (issue.code) {
      case 'unrecognized_keys':
        return issue.keys.map((k) =>
          src.diag('error', [...path, k], `unknown key "${k}"${where ? ` in ${where}` : ''}`, 'key'),
        );
      case 'invalid_type':
        if (issue.input === undefined) return [missingKey(src, path)];
        return [src.diag('error', path, `${where} must be ${article(issue.expected)}, not ${describe(issue.input)}`)];
      case 'invalid_value':
        if (issue.input === undefined) return [missingKey(src, path)];
        return [
          src.diag(
            'error',
            path,
            `${where} must be ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, not ${describe(issue.input)}`,
          ),
        ];
      case 'too_small':
        return [
          src.diag(
            'error',
            path,
            `${where} needs at least ${String(issue.minimum)} entr${issue.minimum === 1 ? 'y' : 'ies'}`,
          ),
        ];
      default:
        return [src.diag('error', path, `${where} ${issue.message}`)];
    }
  });
}

function withoutKey(value: unknown, path: readonly PropertyKey[], mappingKey: string): unknown {
  if (path.length === 0) {
    const { [mappingKey]: _, ...rest } = value as Record<string, unknown>;
    return rest;
  }
  const [head, ...tail] = path;
  const copy = (Array.isArray(value) ? [...(value as unknown[])] : { ...(value as object) }) as Record<
    PropertyKey,
    unknown
  >;
  copy[head as string] = withoutKey(copy[head as string], tail, mappingKey);
  return copy;
}

/**
 * Parses one item's structure. Unknown keys are reported and then set aside, so that
 * a typo does not hide the item's other errors.
 */
/** A required key that is absent: pointed at the mapping that lacks it. */
function missingKey(src: ConfigSource, path: Path): Diagnostic {
  const parent = path.slice(0, -1);
  return src.diag(
    'error',
    parent,
    `${pathText(parent) || 'the config'}: missing required key "${String(path[path.length - 1])}"`,
  );
}

export function parseShape<T>(
  src: ConfigSource,
  schema: z.ZodType<T>,
  value: unknown,
  path: Path,
  out: Diagnostic[],
): T | undefined {
  const r = schema.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  out.push(...shapeDiagnostics(src, path, r.error.issues));
  if (!r.error.issues.every((i) => i.code === 'unrecognized_keys')) return undefined;
  const cleaned = r.error.issues.reduce(
    (v, i) => (i.code === 'unrecognized_keys' ? i.keys.reduce((w, k) => withoutKey(w, i.path, k), v) : v),
    value,
  );
  const again = schema.safeParse(cleaned);
  return again.success ? again.data : undefined;
}

/** Reports the second and later uses of a name, pointing back at the first. */
export function uniqueNames(
  src: ConfigSource,
  kind: string,
  section: string,
  items: readonly unknown[],
  out: Diagnostic[],
): Set<number> {
  const seen = new Map<string, number>();
  const dup = new Set<number>();
  items.forEach((item, i) => {
    const n = (item as { name?: unknown } | null)?.name;
    if (typeof n !== 'string') return;
    const first = seen.get(n);
    if (first === undefined) seen.set(n, i);
    else {
      out.push(
        src.diag(
          'error',
          [section, i, 'name'],
          `duplicate ${kind} name "${n}" (first defined at ${src.where([section, first, 'name'])})`,
        ),
      );
      dup.add(i);
    }
  });
  return dup;
}
