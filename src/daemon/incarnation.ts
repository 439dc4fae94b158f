import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';

// The incarnation: a number in every heartbeat, larger on every start of the daemon, so
// that peers tell a restart from a replay (docs/protocol.md, "Replay"). The wall clock
// alone is not enough: after it steps back (an NTP correction, a VM restored from a
// snapshot) a restarted daemon would start lower than before, and every peer would drop
// its heartbeats as replays. So the last one used is kept on disk, and the next is larger
// than both it and the clock.

/** Under systemd's StateDirectory= (survives restarts and reboots). */
export { DEFAULT_INCARNATION_FILE } from '../config/paths.js';
const MAX = 2n ** 64n - 1n; // the wire field is a uint64

/** The rule: the wall clock in µs, unless that is not larger than the last one used; then the last one + 1. */
export function nextIncarnation(previous: bigint | undefined, nowUs: bigint): bigint {
  return previous !== undefined && previous >= nowUs ? previous + 1n : nowUs;
}

/** The file's number, or undefined when it is not one (decimal digits, a uint64). */
export function parseIncarnation(text: string): bigint | undefined {
  const t = text.trim();
  if (!/^\d{1,20}$/.test(t)) return undefined;
  const n = BigInt(t);
  return n < MAX ? n : undefined;
}

export interface BootIncarnation {
  readonly incarnation: bigint;
  /** The last one used, from the file. */
  readonly previous?: bigint;
  /** Written to the file before the first heartbeat. */
  readonly persisted: boolean;
  /** What went wrong, to log: the daemon still starts (with the clock), as it did before the file existed. */
  readonly problems: readonly string[];
}

/** Reads the last incarnation, picks the next, and writes it (atomically) before anything is sent. */
export function bootIncarnation(file: string, nowUs: bigint): BootIncarnation {
  const problems: string[] = [];
  let previous: bigint | undefined;
  try {
    const text = readFileSync(file, 'utf8');
    previous = parseIncarnation(text);
    if (previous === undefined)
      problems.push(`${file} does not hold an incarnation (ignored): ${JSON.stringify(text.slice(0, 40))}`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') problems.push(`cannot read ${file}: ${(e as Error).message}`);
  }
  const incarnation = nextIncarnation(previous, nowUs);
  let persisted = false;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileAtomic(file, `${incarnation}\n`, 0o644);
    persisted = true;
  } catch (e) {
    problems.push(
      `cannot write ${file}: ${(e as Error).message}; if the clock steps back before the next start, peers will drop this node's heartbeats as replays`,
    );
  }
  return { incarnation, ...(previous !== undefined ? { previous } : {}), persisted, problems };
}
