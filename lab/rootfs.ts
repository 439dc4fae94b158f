import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './lab.js';
import { REPO } from './paths.js';

// The root filesystem of the machines lab (lab/machines.ts): a minimal Debian 13 made by
// mmdebstrap from Debian's archive, with what egress-natd's package depends on, so that
// apt installs the package on a machine that has no route to the archive. Built once into
// build/machines (gitignored) and shared read-only by every machine (each gets an overlay).

export const SUITE = 'trixie';
export const MIRROR = 'http://deb.debian.org/debian';
/**
 * The system: systemd as PID 1, and ca-certificates, as on any installed Debian (Debian's
 * nodejs warns at each start without it). The rest is what the package says it depends on
 * (debDepends): nothing more, so that a dependency it forgets is missing here too.
 */
export const BASE_PACKAGES = ['systemd', 'systemd-sysv', 'dbus', 'ca-certificates'] as const;

/** The names in a package file's Depends (versions and alternatives' others dropped). */
export async function debDepends(deb: string): Promise<string[]> {
  const field = (await run(['dpkg-deb', '--field', deb, 'Depends'])).stdout;
  return field
    .split(',')
    .map((d) =>
      d
        .split('|')[0]!
        .replace(/\(.*\)/, '')
        .trim(),
    )
    .filter(Boolean);
}

/** Where the cache is: a change of suite, mirror or packages makes another one. */
export function rootfsDir(packages: readonly string[]): string {
  const key = createHash('sha256')
    .update([SUITE, MIRROR, ...packages].join('\n'))
    .digest('hex')
    .slice(0, 12);
  return join(REPO, 'build', 'machines', `${SUITE}-${key}`);
}

/**
 * The cached root filesystem; built first if it is missing (about 15 s and 90 MB from the
 * archive). A build is complete only once renamed into place: an interrupted one is redone.
 */
export async function machineRootfs(
  depends: readonly string[],
  log: (msg: string) => void = () => undefined,
): Promise<string> {
  const packages = [...BASE_PACKAGES, ...depends].sort();
  const dir = rootfsDir(packages);
  const root = join(dir, 'root');
  if (existsSync(join(dir, 'complete'))) return root;
  const tmp = `${dir}.building`;
  await rm(tmp, { recursive: true, force: true });
  await rm(dir, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const started = Date.now();
  log(`building the ${SUITE} root filesystem with mmdebstrap from ${MIRROR}`);
  await run(
    ['mmdebstrap', '--quiet', '--variant=minbase', `--include=${packages.join(',')}`, SUITE, join(tmp, 'root'), MIRROR],
    { timeoutMs: 15 * 60_000 },
  );
  await writeFile(join(tmp, 'complete'), `${new Date().toISOString()}\n${packages.join(' ')}\n`);
  await rename(tmp, dir);
  // Roots of earlier package lists are never used again (300 MB each).
  const parent = join(dir, '..');
  for (const old of await readdir(parent))
    if (old.startsWith(`${SUITE}-`) && join(parent, old) !== dir)
      await rm(join(parent, old), { recursive: true, force: true });
  log(`built ${root} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return root;
}
