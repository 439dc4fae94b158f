import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Where things are, for the lab, the lab tests and the benchmarks. Nothing here knows the
// build's layout: the repository is the nearest folder above this module that holds
// package.json (from lab/ or from its compiled copy alike), and a compiled script is found
// next to the module that runs it.

function repositoryRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json in ${from} or above it`);
  }
}

export const REPO = repositoryRoot(dirname(fileURLToPath(import.meta.url)));
export const BIN = join(REPO, 'bin/egress-natd');

/**
 * Node as the lab starts it: as a host runs it, not under the test runner. tap passes its
 * loader hook (NODE_OPTIONS) to every child, which doubles a CLI call's start-up and adds
 * 35 MB to each process; lab tests timed out waiting for daemons still starting.
 */
export const NODE: readonly string[] = ['env', '-u', 'NODE_OPTIONS', process.execPath];
/** Node's flags for the daemon, as the installed command passes them (scripts/install.sh). */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];
/** The same for lab scripts run by sh. */
export const NO_TEST_RUNNER_HOOKS = 'unset NODE_OPTIONS;';

/** The file `name` relative to the module `base` (its import.meta.url): a sibling compiled script. */
export const sibling = (name: string, base: string): string => fileURLToPath(new URL(name, base));

/** A compiled lab script by name (echo-server, prober, inject), next to this module. */
export const labScript = (name: string): string => sibling(`./${name}.js`, import.meta.url);
