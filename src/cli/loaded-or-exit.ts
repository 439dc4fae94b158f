import { formatDiagnostic, hasErrors, sortDiagnostics } from '../config/diagnostics.js';
import type { LoadResult } from '../config/load.js';
import type { Config } from '../config/model.js';
import { err, EXIT_INPUT } from './errors.js';

/** Prints every diagnostic of a loaded config; exits 2 on errors. */
export function loadedOrExit({ config, diagnostics }: LoadResult): Config {
  for (const d of sortDiagnostics(diagnostics)) err(formatDiagnostic(d));
  if (!config || hasErrors(diagnostics)) process.exit(EXIT_INPUT);
  return config;
}
