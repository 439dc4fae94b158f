import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

// The cluster key: a shared secret that authenticates heartbeats (HMAC-SHA256).

export class KeyError extends Error {}

/** The key file's bytes, less the trailing newlines an editor may add. */
export function readKey(file: string): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e) {
    throw new KeyError(`cannot read key file ${file}: ${(e as Error).message}`);
  }
  let end = raw.length;
  while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
  return raw.subarray(0, end);
}

/** 48 random bytes, base64: 64 printable characters (384 bits), easy to copy to every host. */
export const newKey = (): string => `${randomBytes(48).toString('base64')}\n`;

/**
 * Writes a new key with mode 0600. It never replaces an existing key unless `force`:
 * a new key on one host cuts it off from the cluster.
 */
export function writeKey(file: string, force = false): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
  let fd: number;
  try {
    fd = openSync(file, force ? 'w' : 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST')
      throw new KeyError(`${file} exists; not replacing a cluster key (use --force to replace it on every host)`);
    throw new KeyError(`cannot write key file ${file}: ${(e as Error).message}`);
  }
  try {
    fchmodSync(fd, 0o600); // an existing file replaced with --force keeps its mode otherwise
    writeSync(fd, newKey());
  } finally {
    closeSync(fd);
  }
}
