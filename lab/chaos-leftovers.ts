import { existsSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { MACVLAN_PREFIX, NFT_TABLE } from '../src/plan/naming.js';
import { run, type Lab } from './lab.js';

// Invariant 6 of the soak: after the lab is destroyed nothing it or the harness started is
// left: no process, namespace, cgroup, directory, and no egress-natd object in the
// machine's own namespace (the lab never runs the product there; a leak would show up here).

export interface RootSnapshot {
  readonly objects: ReadonlySet<string>;
}

/** egress-natd's objects in the root namespace: its macvlans and its nft table. */
async function rootObjects(): Promise<Set<string>> {
  const links = (await run(['ip', '-o', 'link', 'show'], { allowFail: true })).stdout;
  const tables = (await run(['nft', 'list', 'tables'], { allowFail: true })).stdout;
  const names = [...links.matchAll(/^\d+: ([^:@]+)/gm)].map((m) => m[1]!).filter((n) => n.startsWith(MACVLAN_PREFIX));
  const ours = tables.split('\n').filter((l) => l.includes(NFT_TABLE));
  return new Set([...names.map((n) => `link ${n}`), ...ours.map((t) => t.trim())]);
}

export async function snapshotRoot(): Promise<RootSnapshot> {
  return { objects: await rootObjects() };
}

/** /proc/PID/stat's start time and state: tells a process from a later one that got its pid, and a zombie. */
export function startTime(pid: number): string | undefined {
  return procStat(pid)?.[19];
}

function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU seconds of a process and its waited-for children (utime, stime, cutime, cstime). */
export function cpuSeconds(pid: number): number {
  const f = procStat(pid);
  return f ? (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100 : 0;
}

/** What outlived the lab: `pids` are [pid, start time] of every process the harness and the lab ran. */
export async function leftovers(
  lab: Lab,
  before: RootSnapshot,
  pids: readonly (readonly [number, string | undefined])[],
): Promise<string[]> {
  const found: string[] = [];
  // Killed processes are reaped by their parents a moment later (this process among them).
  const alive = () => pids.filter(([pid, started]) => started !== undefined && startTime(pid) === started);
  for (let i = 0; i < 50 && alive().length; i++) await sleep(100);
  for (const [pid] of alive()) {
    const f = procStat(pid) ?? [];
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim().slice(0, 120);
    found.push(
      f[0] === 'Z'
        ? `process ${pid} is a zombie its parent ${f[1]} has not reaped after 5 s`
        : `process ${pid} (${cmd}) is still running`,
    );
  }
  const netns = (await run(['ip', 'netns', 'list'], { allowFail: true })).stdout;
  for (const l of netns.split('\n')) if (l.includes(lab.id)) found.push(`namespace ${l.split(' ')[0]} is left`);
  if (existsSync(`/sys/fs/cgroup/${lab.id}`)) found.push(`cgroup /sys/fs/cgroup/${lab.id} is left`);
  if (lab.dir && existsSync(lab.dir)) found.push(`directory ${lab.dir} is left`);
  for (const o of await rootObjects()) if (!before.objects.has(o)) found.push(`${o} appeared in the root namespace`);
  return found;
}
