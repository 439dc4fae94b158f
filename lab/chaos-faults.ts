import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChaosEvent, HostEventKind } from './chaos-check.js';
import type { Lab } from './lab.js';

// The soak's faults (lab/chaos.ts): what is injected, where, for how long, and how it is
// healed. Every choice comes from one seeded generator, so a seed names a run (the timing
// of the machine still varies). Each fault heals itself; the scheduler keeps them bounded.

/** mulberry32: small, fast, good enough to pick faults; the same seed gives the same choices. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  between(lo: number, hi: number): number {
    return lo + this.next() * (hi - lo);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  shuffle<T>(xs: readonly T[]): T[] {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }
}

/** What a fault may do to the cluster under test (lab/chaos.ts implements it). */
export interface FaultContext {
  readonly lab: Lab;
  readonly rng: Rng;
  /** A fault ("kill-9 h1") begins, or has healed: violations name the faults around them. */
  began(what: string): void;
  ended(what: string): void;
  /** Records an event for the checker, at the current time. */
  emit(e: { kind: HostEventKind; host: string } | Omit<Extract<ChaosEvent, { kind: 'block' }>, 't'>): void;
  unblock(id: string): void;
  violation(kind: string, what: string): void;
  /** The daemon of `host` runs and has started listening (it handles signals and commands). */
  running(host: string): boolean;
  /** Signals the daemon and waits for it to exit (the exit is expected). */
  stop(host: string, signal: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  /** What systemd does after the daemon ended, whatever the way (ExecStopPost). */
  afterStop(host: string): Promise<void>;
  start(host: string): Promise<void>;
  /** The floating IPs the host's kernel holds now. */
  held(host: string): Promise<string[]>;
  writeConfig(host: string, which: 'good' | 'changed' | 'bad'): void;
  /** Waits for a log line of `host` matching `re` logged after `since` (ms); false after `timeoutMs`. */
  logged(host: string, re: RegExp, since: number, timeoutMs: number): Promise<boolean>;
  /** The messages `host` logged after `since` (ms), the last few. */
  linesSince(host: string, since: number): string[];
}

export type FaultKind =
  | 'kill-9'
  | 'sigterm'
  | 'port-down'
  | 'one-way-loss'
  | 'partition'
  | 'reload-good'
  | 'reload-bad'
  | 'drain'
  | 'key-rotation';

interface FaultSpec {
  /** Takes its host out of the election for a while (counts against the labelled hosts left). */
  readonly disables: boolean;
  /** A network fault (at most one at a time), not tied to one host. */
  readonly network: boolean;
  readonly enabled: boolean;
  /** Runs alone: once picked, no other fault starts, and it begins when the running ones have healed (a cluster-wide change). */
  readonly exclusive?: boolean;
  /** At most one start per this many ms (a fault that pauses the others must not crowd them out). */
  readonly spacingMs?: number;
  /** Picks the details (from the generator, at once) and says what it will do. */
  plan(c: FaultContext, host: string): { readonly what: string; readonly run: () => Promise<void> };
}

/** A fault on one host, described by its kind and host. */
const onHost =
  (kind: FaultKind, run: (c: FaultContext, host: string) => Promise<void>): FaultSpec['plan'] =>
  (c, host) => ({ what: `${kind} ${host}`, run: () => run(c, host) });

const SWITCH_GROUP = '239.255.76.67';
let tables = 0;

/** Restarted after a while; the fault lasts until the daemon takes part again (its listening time included). */
async function restartLater(c: FaultContext, host: string): Promise<void> {
  await c.afterStop(host);
  await sleep(c.rng.between(300, 3000));
  const since = Date.now();
  await c.start(host);
  await c.logged(host, /^ready: taking part/, since, 10_000);
}

async function hold(c: FaultContext, lo: number, hi: number): Promise<void> {
  await sleep(c.rng.between(lo, hi));
}

/** A bridge-family nft table in the switch namespace dropping frames between ports. */
async function block(
  c: FaultContext,
  rules: string[],
  pairs: [string, string][],
  groups?: string[][],
): Promise<string> {
  const id = `chaos${++tables}`;
  const chain = `'{ type filter hook forward priority 0; }'`;
  await c.lab.sh(
    'sw',
    [
      `nft add table bridge ${id}`,
      `nft add chain bridge ${id} f ${chain}`,
      ...rules.map((r) => `nft add rule bridge ${id} f ${r}`),
    ].join(' && '),
  );
  c.emit({ kind: 'block', id, pairs, ...(groups ? { groups } : {}) });
  return id;
}

async function unblock(c: FaultContext, id: string): Promise<void> {
  await c.lab.sh('sw', `nft delete table bridge ${id}`);
  c.unblock(id);
}

export const FAULTS: Record<FaultKind, FaultSpec> = {
  'kill-9': {
    disables: true,
    network: false,
    enabled: true,
    plan: onHost('kill-9', async (c, host) => {
      await c.stop(host, 'SIGKILL');
      await restartLater(c, host);
    }),
  },
  sigterm: {
    disables: true,
    network: false,
    enabled: true,
    plan: onHost('sigterm', async (c, host) => {
      await c.stop(host, 'SIGTERM');
      // The daemon says it released everything before it exits: nothing may be left.
      const left = await c.held(host);
      if (left.length) c.violation('held-after-stop', `${host} still holds ${left.join(', ')} after its daemon exited`);
      else c.emit({ kind: 'released', host });
      await restartLater(c, host);
    }),
  },
  'port-down': {
    disables: true,
    network: false,
    enabled: true,
    plan: onHost('port-down', async (c, host) => {
      await c.lab.setPort(host, false);
      c.emit({ kind: 'portDown', host });
      await hold(c, 300, 4000);
      await c.lab.setPort(host, true);
      c.emit({ kind: 'portUp', host });
    }),
  },
  'one-way-loss': {
    disables: false,
    network: true,
    enabled: true,
    plan(c, from) {
      const to = c.rng.pick(c.lab.hosts.map((h) => h.name).filter((h) => h !== from));
      return {
        what: `one-way-loss ${from} → ${to}`,
        run: async () => {
          // Heartbeats only (the multicast group), one direction: `to` stops hearing `from`.
          const rule = `iifname "p-${from}" oifname "p-${to}" ip daddr ${SWITCH_GROUP} drop`;
          const id = await block(c, [rule], [[from, to]]);
          await hold(c, 500, 5000);
          await unblock(c, id);
        },
      };
    },
  },
  partition: {
    disables: false,
    network: true,
    enabled: true,
    plan(c) {
      const all = c.rng.shuffle([...c.lab.hosts.map((h) => h.name), 'r']);
      const cut = 1 + Math.floor(c.rng.next() * (all.length - 1));
      const groups = [all.slice(0, cut).sort(), all.slice(cut).sort()] as const;
      const set = (xs: readonly string[]) => `{ ${xs.map((x) => `"p-${x}"`).join(', ')} }`;
      const hostsOf = (g: readonly string[]) => g.filter((x) => x !== 'r');
      const pairs = hostsOf(groups[0]).flatMap((a) =>
        hostsOf(groups[1]).flatMap((b): [string, string][] => [
          [a, b],
          [b, a],
        ]),
      );
      return {
        what: `partition {${groups[0].join(',')}} | {${groups[1].join(',')}}`,
        run: async () => {
          const rules = [
            `iifname ${set(groups[0])} oifname ${set(groups[1])} drop`,
            `iifname ${set(groups[1])} oifname ${set(groups[0])} drop`,
          ];
          const id = await block(c, rules, pairs, groups.map(hostsOf));
          await hold(c, 500, 5000);
          await unblock(c, id);
        },
      };
    },
  },
  'reload-good': {
    disables: false,
    network: false,
    enabled: true,
    plan: onHost('reload-good', async (c, host) => {
      await reload(c, host, 'changed', /^reloaded /);
      await hold(c, 500, 4000);
      if (c.running(host)) await reload(c, host, 'good', /^reloaded /);
      else c.writeConfig(host, 'good');
    }),
  },
  'reload-bad': {
    disables: false,
    network: false,
    enabled: true,
    plan: onHost('reload-bad', async (c, host) => {
      await reload(c, host, 'bad', /^reload rejected/);
      c.writeConfig(host, 'good');
    }),
  },
  drain: {
    disables: true,
    network: false,
    enabled: true,
    plan: onHost('drain', async (c, host) => {
      c.emit({ kind: 'drain', host });
      const r = await c.lab.egress(host, ['drain'], { allowFail: true });
      if (r.code !== 0) c.violation('command-failed', `drain on ${host}: ${(r.stderr || r.stdout).trim()}`);
      await hold(c, 500, 4000);
      const u = await c.lab.egress(host, ['undrain'], { allowFail: true });
      if (u.code !== 0) c.violation('command-failed', `undrain on ${host}: ${(u.stderr || u.stdout).trim()}`);
      c.emit({ kind: 'undrain', host });
    }),
  },
  'key-rotation': {
    disables: false,
    network: false,
    exclusive: true,
    spacingMs: 30_000,
    enabled: true,
    plan: (c) => ({ what: 'key-rotation all', run: () => rotateKey(c) }),
  },
};

/**
 * A rolling key change, as README.md "Key rotation" tells an operator to do it: the new key
 * added (verify-only) and every host reloaded, then moved first (it signs) and every host
 * reloaded, then the old one dropped and every host reloaded; one host at a time, with
 * traffic flowing. Any moment at which two hosts cannot hear each other shows up as an IP
 * with two holders (the checker's invariants).
 */
async function rotateKey(c: FaultContext): Promise<void> {
  const file = join(c.lab.dir, 'cluster.key');
  const old = readFileSync(file, 'latin1').split('\n')[0]!.trim();
  const next = randomBytes(32).toString('hex');
  for (const keys of [[old, next], [next, old], [next]]) {
    writeFileSync(`${file}.tmp`, `${keys.join('\n')}\n`, { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
    for (const host of c.rng.shuffle(c.lab.hosts.map((h) => h.name))) {
      if (!c.running(host)) continue;
      const since = Date.now();
      c.lab.signalDaemon(host, 'SIGHUP');
      if (!(await c.logged(host, /^reloaded /, since, 5000)))
        c.violation(
          'reload',
          `${host}: no reload within 5 s of a SIGHUP in a key rotation: ${c.linesSince(host, since).join(' | ')}`,
        );
      await hold(c, 100, 600);
    }
  }
}

/** SIGHUP with the host's file replaced by `which`; the daemon must log `expect` within 5 s. */
async function reload(c: FaultContext, host: string, which: 'good' | 'changed' | 'bad', expect: RegExp): Promise<void> {
  c.writeConfig(host, which);
  const since = Date.now();
  c.lab.signalDaemon(host, 'SIGHUP');
  if (!(await c.logged(host, expect, since, 5000)))
    c.violation(
      'reload',
      `${host}: no "${expect.source}" in the log within 5 s of a SIGHUP with the ${which} file; it logged: ${c.linesSince(host, since).join(' | ')}`,
    );
}

export interface SchedulerLimits {
  /** Faults at once. */
  readonly maxActive: number;
  /** Hosts of `protectedHosts` that disabling faults may take out at once (one must stay). */
  readonly maxDisabled: number;
  readonly protectedHosts: readonly string[];
  /** Pause between two injections (ms). */
  readonly gapMs: readonly [number, number];
}

/**
 * Injects random faults until `until` (ms), then waits until every fault has healed.
 * A host carries one fault at a time, at most one network fault runs, and disabling
 * faults never take out every protected host (the candidates of the primary gateway).
 */
export async function runFaults(
  c: FaultContext,
  until: number,
  limits: SchedulerLimits,
  counts: Record<string, number>,
): Promise<void> {
  const active = new Set<Promise<void>>();
  const busy = new Set<string>();
  let network = false;
  let alone = false;
  const lastStart: Partial<Record<FaultKind, number>> = {};
  const kinds = (Object.keys(FAULTS) as FaultKind[]).filter((k) => FAULTS[k].enabled);
  const hosts = c.lab.hosts.map((h) => h.name);
  while (Date.now() < until) {
    await sleep(c.rng.between(limits.gapMs[0], limits.gapMs[1]));
    const kind = c.rng.pick(kinds);
    const spec = FAULTS[kind];
    const disabled = limits.protectedHosts.filter((h) => busy.has(h)).length;
    const free = c.rng.shuffle(hosts).filter((h) => !busy.has(h) && c.running(h));
    const host = free.find(
      (h) => !spec.disables || !limits.protectedHosts.includes(h) || disabled < limits.maxDisabled,
    );
    if (active.size >= limits.maxActive || (spec.network && network) || !host || alone) continue;
    if (spec.spacingMs && Date.now() - (lastStart[kind] ?? -Infinity) < spec.spacingMs) continue;
    lastStart[kind] = Date.now();
    if (spec.exclusive) {
      alone = true; // nothing new starts; what runs heals first
      while (active.size) await Promise.race(active);
    }
    counts[kind] = (counts[kind] ?? 0) + 1;
    const { what, run } = spec.plan(c, host);
    c.began(what);
    const claims = spec.network ? [] : [host];
    for (const h of claims) busy.add(h);
    if (spec.network) network = true;
    const p: Promise<void> = run()
      .catch((e: Error) => c.violation('harness', `${what}: ${e.message}`))
      .finally(() => {
        c.ended(what);
        for (const h of claims) busy.delete(h);
        if (spec.network) network = false;
        if (spec.exclusive) alone = false;
        active.delete(p);
      });
    active.add(p);
  }
  while (active.size) await Promise.race(active);
}
