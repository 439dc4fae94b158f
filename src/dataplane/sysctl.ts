import { readFile, writeFile } from 'node:fs/promises';

// Sysctls are read and written through /proc/sys of the caller's network namespace.

const ROOT = '/proc/sys/';

export async function readSysctl(path: string): Promise<string | undefined> {
  try {
    return (await readFile(ROOT + path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

export async function writeSysctl(path: string, value: string): Promise<void> {
  try {
    await writeFile(ROOT + path, value);
  } catch (e) {
    throw new Error(`cannot set ${path.replaceAll('/', '.')}=${value}: ${(e as Error).message}`, { cause: e });
  }
}
