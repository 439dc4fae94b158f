import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Diagnostic } from './diagnostics.js';
import { keySizes } from './key.js';
import type { Config } from './model.js';
import { fastParse } from './fast-parse.js';
import { ConfigSource } from './source.js';
import { validate, type KeyFileFacts } from './validate.js';

export { DEFAULT_CONFIG } from './paths.js';

export interface LoadResult {
  readonly config?: Config;
  readonly diagnostics: readonly Diagnostic[];
}

export function inspectKeyFile(path: string): KeyFileFacts {
  try {
    const st = statSync(path);
    const keys = st.isFile() ? keySizes(path) : undefined;
    return { exists: true, regular: st.isFile(), mode: st.mode, size: st.size, ...(keys ? { keys } : {}) };
  } catch {
    return { exists: false };
  }
}

/** Validates config text; `keyFile` is injectable so tests need no files. */
export function loadConfigText(
  file: string,
  text: string,
  keyFile: (p: string) => KeyFileFacts = inspectKeyFile,
  /** Try the fast parser first (off only to compare the two paths in tests). */
  fast = true,
): LoadResult {
  const digest = createHash('sha256').update(text).digest('hex');
  const opts = { keyFile, resolvePath: (p: string) => resolve(dirname(resolve(file)), p), digest };
  // Parsed fast and validated; parsed again with positions only if there is a message to place.
  const parsed = fast ? fastParse(text) : undefined;
  if (parsed) {
    const result = validate(ConfigSource.withoutPositions(file, parsed.data), opts);
    if (!result.diagnostics.length) return result;
  }
  return validate(new ConfigSource(file, text), opts);
}

export function loadConfig(file: string): LoadResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message;
    return { diagnostics: [{ file, line: 1, col: 1, severity: 'error', message: `cannot read config: ${reason}` }] };
  }
  return loadConfigText(file, text);
}
