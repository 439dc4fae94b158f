import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';

// The cluster keys: shared secrets that authenticate heartbeats (HMAC-SHA256). A key file
// lists one key per line: the first signs, every one verifies, so that a key can be
// rotated host by host without a moment where two hosts cannot hear each other
// (README.md, "Key rotation"; docs/protocol.md, "Keys").

export class KeyError extends Error {}

/** The cluster keys, at least one: the first signs heartbeats, every one verifies them. */
export type ClusterKeys = readonly Buffer[];

/** Bytes a text key file may hold: printable ASCII, tab, CR, LF. */
const isText = (raw: Buffer): boolean =>
  raw.every((b) => b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b < 0x7f));

/** A key and the line it is on (1-based), for messages. */
export interface KeyLine {
  readonly line: number;
  readonly key: Buffer;
}

/**
 * The keys of a key file. A text file holds one key per line (a trailing CR is dropped,
 * empty lines are skipped). A file with any other byte is one binary key: its bytes less
 * trailing newlines, as before key files could list keys, so that binary keys (which may
 * contain a newline byte) keep working unchanged.
 */
export function parseKeys(raw: Buffer): KeyLine[] {
  if (!isText(raw)) {
    let end = raw.length;
    while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
    return end ? [{ line: 1, key: raw.subarray(0, end) }] : [];
  }
  return raw
    .toString('latin1')
    .split('\n')
    .map((text, i) => ({ line: i + 1, key: Buffer.from(text.replace(/\r$/, ''), 'latin1') }))
    .filter((k) => k.key.length > 0);
}

function readRaw(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new KeyError(`cannot read key file ${file}: ${(e as Error).message}`);
  }
}

/** The keys of `file`, the signing key first. */
export function readKeys(file: string): ClusterKeys {
  const keys = parseKeys(readRaw(file)).map((k) => k.key);
  if (!keys.length) throw new KeyError(`key file ${file} holds no key`);
  return keys;
}

/** The key that signs: the first of `file`. */
export const readKey = (file: string): Buffer => readKeys(file)[0]!;

/** Each key of `file`: its line and size; undefined when it cannot be read (`check` run without root). */
export function keySizes(file: string): { line: number; size: number }[] | undefined {
  try {
    return parseKeys(readFileSync(file)).map((k) => ({ line: k.line, size: k.key.length }));
  } catch {
    return undefined;
  }
}

/** 48 random bytes, base64: 64 printable characters (384 bits), easy to copy to every host. */
const newKeyLine = (): string => randomBytes(48).toString('base64');
export const newKey = (): string => `${newKeyLine()}\n`;

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

/**
 * The three steps of a key rotation. Each is done on every host (the same file copied,
 * then a reload) before the next starts, so that no host ever signs with a key another
 * host does not verify:
 *  - rotate:  [old] → [old, new]  a new key that only verifies
 *  - promote: [old, new] → [new, old]  the new key signs; the old one still verifies
 *  - retire:  [new, old] → [new]  the old key goes
 */
export type RotationStep = 'rotate' | 'promote' | 'retire';

/** The keys after `step`, from the keys now (the signing key first). */
export function rotationStep(keys: readonly string[], step: RotationStep, fresh = newKeyLine): string[] {
  const [first, ...rest] = keys;
  if (first === undefined) throw new KeyError('the key file holds no key');
  switch (step) {
    case 'rotate':
      if (rest.length)
        throw new KeyError(
          `a rotation is under way (${keys.length} keys): finish it with --promote, then --retire, before starting another`,
        );
      return [first, fresh()];
    case 'promote':
      if (!rest.length) throw new KeyError('only one key: start a rotation with --rotate first');
      return [rest[rest.length - 1]!, first, ...rest.slice(0, -1)];
    case 'retire':
      if (!rest.length) throw new KeyError('only one key: nothing to retire');
      return [first];
  }
}

/** Applies one rotation step to `file` in place (atomically, mode 0600); returns the keys it now holds. */
export function rotateKeyFile(file: string, step: RotationStep): string[] {
  const raw = readRaw(file);
  if (!isText(raw))
    throw new KeyError(`${file} holds a binary key; rotation needs a text key file (egress-natd keygen)`);
  const keys = rotationStep(
    parseKeys(raw).map((k) => k.key.toString('latin1')),
    step,
  );
  try {
    writeFileAtomic(file, keys.map((k) => `${k}\n`).join(''));
  } catch (e) {
    throw new KeyError(`cannot write key file ${file}: ${(e as Error).message}`);
  }
  return keys;
}
