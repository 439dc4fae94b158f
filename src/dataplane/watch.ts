import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { SETPRIV, startTied } from './tied.js';

// Kernel change notifications, from rtnetlink (`ip monitor`) and nf_tables (`nft
// monitor`): the daemon repairs what someone else deleted. Both are long-lived
// children, tied to the daemon's life (tied.ts); one that dies is started again.

export type KernelEvent = { readonly source: 'ip' | 'nft'; readonly line: string };

const IP_MONITOR = ['ip', '-o', 'monitor', 'link', 'address', 'rule', 'route'];
/**
 * Only deletions: nftables 1.0.6 (Debian 12) takes this, and filters in nft. Later
 * nftables made `destroy` a command keyword, and its parser rejects it here (1.1.3,
 * Debian 13: "syntax error, unexpected destroy"); `monitor delete` fails on both.
 */
export const NFT_MONITOR_DELETIONS = ['nft', 'monitor', 'destroy'];
/** Every nf_tables event, which every nftables version takes; the daemon keeps the deletions. */
export const NFT_MONITOR_ALL = ['nft', 'monitor'];

/** Whether nft refused `monitor destroy` (an nftables that reads `destroy` as a command). */
export const rejectsMonitorDestroy = (stderr: string): boolean => /syntax error, unexpected destroy/.test(stderr);

/**
 * Whether a line of `nft monitor` reports a deletion ("delete table inet egress_natd", "delete
 * element ..."). Additions must not pass: each reconcile's own would ask for another repair.
 */
export const isNftDeletion = (line: string): boolean => line.startsWith('delete ');

export interface Watcher {
  close(): void;
  /** Resolves once both monitors are running; rejects if one cannot be started (they are tried again). */
  readonly ready: Promise<void>;
}

export function watchKernel(onEvent: (e: KernelEvent) => void, onError: (e: Error) => void): Watcher {
  const children = new Map<string, ChildProcess>();
  let closed = false;
  // Learned once per daemon: this nft rejects `monitor destroy`, so it reads every event.
  let nftReadsAll = false;
  const command = (source: KernelEvent['source']): string[] =>
    source === 'ip' ? IP_MONITOR : nftReadsAll ? NFT_MONITOR_ALL : NFT_MONITOR_DELETIONS;
  const start = (source: KernelEvent['source']): Promise<void> => {
    const argv = command(source);
    const what = argv.join(' ');
    const keep = source === 'nft' && nftReadsAll ? isNftDeletion : () => true;
    const child = startTied(argv, (c, a) => spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'] }));
    children.set(source, child);
    createInterface({ input: child.stdout }).on('line', (line) => keep(line) && onEvent({ source, line }));
    let stderr = ''; // why it ended, reported with its exit; the first few KiB are enough
    child.stderr.on('data', (d: Buffer) => (stderr = `${stderr}${d.toString()}`.slice(0, 4096)));
    // A child that could not be spawned emits 'error' and maybe no 'exit'; one that ran emits
    // 'close' once it exited and its output is read (its stderr says why it ended).
    let restarting = false;
    const restart = (why: string, delayMs = 1000) => {
      if (closed || restarting) return;
      restarting = true;
      onError(new Error(`${what} ${why}; restarting it`));
      setTimeout(() => !closed && void start(source).catch(() => undefined), delayMs).unref();
    };
    child.on('close', (code, signal) => {
      if (source === 'nft' && !nftReadsAll && rejectsMonitorDestroy(stderr)) {
        nftReadsAll = true;
        restart(`is refused by this nftables (${stderr.trim().split('\n')[0]}); reading \`nft monitor\` instead`, 0);
        return;
      }
      restart(`exited (${signal ?? code})${stderr.trim() ? `: ${stderr.trim()}` : ''}`);
    });
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
