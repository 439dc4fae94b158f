import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { SETPRIV, tiedToUs } from './tied.js';

// Kernel change notifications, from rtnetlink (`ip monitor`) and nf_tables (`nft
// monitor destroy`): the daemon repairs what someone else deleted. Both are long-lived
// children, tied to the daemon's life (tied.ts); one that dies is started again.

export type KernelEvent = { readonly source: 'ip' | 'nft'; readonly line: string };

const COMMANDS: Record<KernelEvent['source'], string[]> = {
  ip: ['ip', '-o', 'monitor', 'link', 'address', 'rule', 'route'],
  nft: ['nft', 'monitor', 'destroy'],
};

export interface Watcher {
  close(): void;
  /** Resolves once both monitors are running; rejects if one cannot be started (they are tried again). */
  readonly ready: Promise<void>;
}

export function watchKernel(onEvent: (e: KernelEvent) => void, onError: (e: Error) => void): Watcher {
  const children = new Map<string, ChildProcess>();
  let closed = false;
  const start = (source: KernelEvent['source']): Promise<void> => {
    const what = COMMANDS[source].join(' ');
    const child = spawn(...tiedToUs(COMMANDS[source]), { stdio: ['ignore', 'pipe', 'pipe'] });
    children.set(source, child);
    createInterface({ input: child.stdout }).on('line', (line) => onEvent({ source, line }));
    child.stderr.on('data', (d: Buffer) => onError(new Error(`${what}: ${d.toString().trim()}`)));
    // A child that could not be spawned emits 'error' and maybe no 'exit'; one that ran emits 'exit'.
    let restarting = false;
    const restart = (why: string) => {
      if (closed || restarting) return;
      restarting = true;
      onError(new Error(`${what} ${why}; restarting it`));
      setTimeout(() => !closed && void start(source).catch(() => undefined), 1000).unref();
    };
    child.on('exit', (code, signal) => restart(`exited (${signal ?? code})`));
    return new Promise((ok, fail) => {
      child.once('spawn', () => ok());
      child.on('error', (e) => {
        restart(`cannot be started: ${e.message} (${SETPRIV} is in util-linux)`);
        fail(new Error(`${what}: ${e.message}`));
      });
    });
  };
  const ready = Promise.all([start('ip'), start('nft')]).then(() => undefined);
  const close = () => {
    closed = true;
    for (const c of children.values()) c.kill('SIGTERM');
  };
  // An exit without close() (process.exit on a fatal error) must not leave monitors behind.
  process.once('exit', close);
  return {
    ready,
    close() {
      process.off('exit', close);
      close();
    },
  };
}
