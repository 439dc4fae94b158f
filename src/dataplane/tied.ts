import type { ChildProcess } from 'node:child_process';
import { lowerStarted } from './priority.js';

// Every long or slow child of the daemon runs under util-linux setpriv with
// PR_SET_PDEATHSIG=SIGKILL: if the daemon dies, even by SIGKILL, the kernel kills the
// child. The signal follows the death of the thread that forked the child; Node forks
// from its main thread, which lives as long as the process (test/lab/leftovers.test.ts).

export const SETPRIV = 'setpriv';

/** argv run by setpriv, tied to this process's life; setpriv execs it, so the pid stays the same. */
export const tiedToUs = (argv: readonly string[]): [string, string[]] => [
  SETPRIV,
  ['--pdeathsig', 'SIGKILL', '--', ...argv],
];

/**
 * Starts `argv` tied to this process's life (`start` spawns it as given, with its own
 * options), at the priority of what the loop starts (priority.ts).
 */
export function startTied<C extends ChildProcess>(
  argv: readonly string[],
  start: (command: string, args: string[]) => C,
): C {
  const child = start(...tiedToUs(argv));
  lowerStarted(child.pid);
  return child;
}

/** setpriv's exit code when it cannot exec the command (not found, not executable). */
export const CANNOT_EXEC = 127;
