import { rotateKeyFile, writeKey } from '../config/key.js';
import { out } from './errors.js';

/** What to do after each step of a key rotation (README.md, "Key rotation"). */
const ROTATION_NEXT = {
  rotate:
    'step 1 of 3: a new key that only verifies; copy this file to every host and reload each, then run keygen --promote',
  promote:
    'step 2 of 3: the new key signs, the old one still verifies; copy this file to every host and reload each, then run keygen --retire',
  retire: 'step 3 of 3: the old key is gone; copy this file to every host and reload each',
} as const;

export function keygen(file: string, o: { force?: boolean; rotate?: boolean; promote?: boolean; retire?: boolean }) {
  const step = o.rotate ? 'rotate' : o.promote ? 'promote' : o.retire ? 'retire' : undefined;
  if (!step) {
    writeKey(file, o.force);
    return out(`wrote a new cluster key to ${file} (mode 0600)`);
  }
  const keys = rotateKeyFile(file, step);
  out(`${file}: ${keys.length} key${keys.length === 1 ? '' : 's'} (${ROTATION_NEXT[step]})`);
}
