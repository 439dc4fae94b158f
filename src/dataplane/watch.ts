import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

// Kernel change notifications, from rtnetlink (`ip monitor`) and nf_tables (`nft
// monitor destroy`): the daemon repairs what someone else deleted. Both are long-lived
// children; one that dies is started again.

export type KernelEvent = { readonly source: 'ip' | 'nft'; readonly line: string };

const COMMANDS: Record<KernelEvent['source'], string[]> = {
  ip: ['ip', '-o', 'monitor', 'link', 'address', 'rule', 'route'],
  nft: ['nft', 'monitor', 'destroy'],
};

export interface Watcher {
  close(): void;
  /** Resolves once both monitors are running. */
  readonly ready: Promise<void>;
}

export function watchKernel(onEvent: (e: KernelEvent) => void, onError: (e: Error) => void): Watcher {
  const children = new Map<string, ChildProcess>();
  let closed = false;
  const start = (source: KernelEvent['source']): Promise<void> => {
    const [cmd, ...args] = COMMANDS[source];
    const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.set(source, child);
    createInterface({ input: child.stdout }).on('line', (line) => onEvent({ source, line }));
    child.stderr.on('data', (d: Buffer) => onError(new Error(`${cmd}: ${d.toString().trim()}`)));
    child.on('exit', (code, signal) => {
      if (closed) return;
      onError(new Error(`${COMMANDS[source].join(' ')} exited (${signal ?? code}); restarting it`));
      setTimeout(() => !closed && void start(source), 1000).unref();
    });
    return new Promise((ok) => child.once('spawn', () => ok()));
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
