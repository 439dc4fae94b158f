import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { deserialize } from 'node:v8';
import type { LoadResult } from '../config/load.js';
import { startTied } from '../dataplane/tied.js';

// The daemon reads and validates its config in a process of its own (config-reader-main.ts):
// the YAML parsers and the schema library never enter the daemon's heap, which runs for
// months (about 5 MB of its steady RSS; a thread that loaded them and ended left most of
// that behind). Once per start or reload; the answer crosses as V8's serialization (the
// structured clone: bigints and all). A config big enough for the planner's thread is
// read there instead (planner.ts), where it is needed.

const READER = fileURLToPath(new URL('./config-reader-main.js', import.meta.url));
/** A config of 100,000 CIDRs serializes to about 20 MB. */
const MAX_ANSWER_BYTES = 512 * 1024 * 1024;

/** `loadConfig(file)` in a child process; rejects (with what it said) only if the child fails. */
export function readConfigApart(file: string): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    startTied([process.execPath, READER, file], (command, args) =>
      execFile(command, args, { encoding: 'buffer', maxBuffer: MAX_ANSWER_BYTES }, (e, stdout, stderr) => {
        if (e) {
          const said = stderr.toString().trim().split('\n').slice(-3).join(' / ');
          return reject(new Error(`reading ${file} failed: ${said || e.message}`, { cause: e }));
        }
        try {
          resolve(deserialize(stdout) as LoadResult);
        } catch (x) {
          reject(new Error(`reading ${file}: its reader answered nothing usable (${(x as Error).message})`));
        }
      }),
    );
  });
}
