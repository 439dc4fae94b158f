import type { SyncStats } from '../src/daemon/connection-sync.js';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfigText } from '../src/config/load.js';
import type { KeyFileFacts } from '../src/config/validate.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CONFIG_DIR = join(REPO, 'test/config');

/** Key files for unit tests, by name: no files on disk (git does not keep mode 0600). */
export function fakeKeyFile(path: string): KeyFileFacts {
  switch (basename(path)) {
    case 'good.key':
      return { exists: true, regular: true, mode: 0o100600, size: 64 };
    case 'world-readable.key':
      return { exists: true, regular: true, mode: 0o100644, size: 64 };
    case 'short.key':
      return { exists: true, regular: true, mode: 0o100600, size: 10 };
    default:
      return { exists: false };
  }
}

export const validText = (): string => readFileSync(join(CONFIG_DIR, 'valid.yaml'), 'utf8');

export function loadValid(text = validText()) {
  const r = loadConfigText('valid.yaml', text, fakeKeyFile);
  if (!r.config) throw new Error(`valid.yaml is invalid: ${JSON.stringify(r.diagnostics)}`);
  return r.config;
}

/** A seeded generator, so that random tests fail reproducibly. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
}

/** Connection sync's health as the daemon reports it, for the status and metrics tests. */
export const syncStats: SyncStats = {
  port: 7608,
  cached: { '192.168.1.101': 1200 },
  sending: { '192.168.1.100': 345 },
  peers: { worker2: { lastHeardMsAgo: 80, inSync: true }, cp1: { lastHeardMsAgo: null, inSync: false } },
  datagramsSent: 10,
  datagramsReceived: 20,
  dropped: { 'bad-mac': 2, replay: 1 },
  installed: 26,
  existing: 3,
  installFailed: 0,
  sendErrors: 0,
  eventsLost: 1,
  lagMs: 42.4,
};

/**
 * A network namespace of its own (removed at teardown) with conntrack over netlink and a
 * NAT chain: the kernel sets up NAT for inserted entries only where NAT hooks are registered.
 */
export async function natNamespace(t: { teardown(fn: () => unknown): void }, prefix: string): Promise<string> {
  const { run } = await import('../lab/lab.js');
  const ns = `${prefix}${randomBytes(3).toString('hex')}`;
  await run(['modprobe', '-a', 'nf_conntrack_netlink', 'nf_nat'], { allowFail: true });
  await run(['ip', 'netns', 'add', ns]);
  t.teardown(() => run(['ip', 'netns', 'del', ns], { allowFail: true }));
  await run([
    'ip',
    'netns',
    'exec',
    ns,
    'nft',
    'add table ip t; add chain ip t post { type nat hook postrouting priority 100; }',
  ]);
  return ns;
}
