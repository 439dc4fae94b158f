import { spawn, type ChildProcess } from 'node:child_process';
import { routerBound } from './capture.js';
import { closeSync, openSync, readSync } from 'node:fs';
import type { Sample } from './chaos-check.js';
import { eachLine, type Lab } from './lab.js';

// What the soak watches, cheaply: the kernels' addresses (one bash loop for the whole
// soak, `ip -n` per host: no Node start-up per sample), the packets reaching the router
// (one tcpdump), and the daemons' JSON logs (read from where the last read stopped).

/** A process the soak started outside the lab's namespaces' pids: killed at the end, checked gone after. */
export interface Watcher {
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

function watcher(child: ChildProcess, lab: Lab): Watcher {
  lab.onDestroy(() => void child.kill('SIGKILL'));
  return {
    child,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/**
 * Reads every host's IPv4 addresses every `periodMs` and reports which hosts hold each of
 * `fips`. Times come from bash's EPOCHREALTIME (no fork): t0 before the first read, t1 after the last.
 */
export function startSampler(
  lab: Lab,
  hosts: readonly string[],
  fips: readonly string[],
  periodMs: number,
  onSample: (s: Sample) => void,
): Watcher {
  const reads = hosts.map((h) => `echo "H ${h}"; ip -n ${lab.ns(h)} -o -4 addr show 2>/dev/null;`).join(' ');
  // `read -t` on a pipe nobody writes to sleeps without a fork; it ends the loop at EOF (our end closed).
  const pause = `read -t ${periodMs / 1000} || [ $? -gt 128 ] || exit 0;`;
  const script = `while :; do a=$EPOCHREALTIME; ${reads} echo "S $a $EPOCHREALTIME"; ${pause} done`;
  const child = spawn('bash', ['-c', script], {
    stdio: ['pipe', 'pipe', 'ignore'],
    env: { ...process.env, LC_ALL: 'C' },
  });
  const wanted = new Set(fips);
  let host = '';
  let holders: Record<string, string[]> = Object.fromEntries(fips.map((f) => [f, []]));
  eachLine(child.stdout, (l) => {
    if (l.startsWith('H ')) host = l.slice(2);
    else if (l.startsWith('S ')) {
      const [, t0, t1] = l.split(' ');
      onSample({ t0: Number(t0) * 1000, t1: Number(t1) * 1000, holders });
      holders = Object.fromEntries(fips.map((f) => [f, []]));
    } else {
      const ip = /\binet (\d+\.\d+\.\d+\.\d+)\//.exec(l)?.[1];
      if (ip && wanted.has(ip)) holders[ip]!.push(host);
    }
  });
  return watcher(child, lab);
}

export interface Leak {
  readonly t: number;
  readonly src: string;
  readonly dst: string;
  /** The Ethernet source: which host (or floating IP's macvlan) put it on the segment. */
  readonly mac: string;
}

/**
 * Every IP packet arriving at the router (namespace `r`) that matches `filter` (a pcap
 * filter): with `noGateway: drop`, selected traffic that leaves with a source that is not
 * its floating IP. Resolves once tcpdump listens.
 */
export async function startLeakWatch(lab: Lab, filter: string, onLeak: (l: Leak) => void): Promise<Watcher> {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      lab.ns('r'),
      'tcpdump',
      '-i',
      'eth0',
      '-p',
      '-nn',
      '-e',
      '-l',
      '-tt',
      '-Q',
      'in',
      await routerBound(lab, filter),
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  eachLine(child.stdout, (l) => {
    const m = /^(\d+\.\d+) (\S+) > \S+, .*?: (\d+\.\d+\.\d+\.\d+)\S* > (\d+\.\d+\.\d+\.\d+)/.exec(l);
    if (m) onLeak({ t: Number(m[1]) * 1000, mac: m[2]!, src: m[3]!, dst: m[4]! });
  });
  await new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error('tcpdump did not start listening in 10 s')), 10_000);
    eachLine(child.stderr, (l) => {
      if (!l.includes('listening on')) return;
      clearTimeout(t);
      ok();
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      fail(new Error(`tcpdump exited ${code}`));
    });
  });
  return watcher(child, lab);
}

export interface LogLine {
  readonly host: string;
  readonly t: number;
  readonly level: number;
  readonly msg: string;
  readonly raw: string;
}

/** The daemons' JSON logs (pino: `time` in ms, `level` 50 error, 60 fatal), read on demand from where the last read stopped. */
export class LogTail {
  private readonly offset = new Map<string, number>();
  private readonly partial = new Map<string, string>();

  constructor(
    private readonly fileOf: (host: string) => string,
    private readonly hosts: readonly string[],
  ) {}

  /** Lines written since the last call, all hosts. */
  read(): LogLine[] {
    const out: LogLine[] = [];
    for (const host of this.hosts) {
      const text = (this.partial.get(host) ?? '') + this.readNew(host);
      const lines = text.split('\n');
      this.partial.set(host, lines.pop()!);
      for (const raw of lines) {
        if (!raw.trim()) continue;
        try {
          const j = JSON.parse(raw) as { time?: number; level?: number; msg?: string };
          out.push({ host, t: j.time ?? Date.now(), level: j.level ?? 0, msg: j.msg ?? '', raw });
        } catch {
          // Not JSON: Node itself wrote it (an uncaught exception's stack): as bad as fatal.
          out.push({ host, t: Date.now(), level: 60, msg: raw, raw });
        }
      }
    }
    return out;
  }

  private readNew(host: string): string {
    let fd: number;
    try {
      fd = openSync(this.fileOf(host), 'r');
    } catch {
      return ''; // not written yet
    }
    try {
      const chunks: Buffer[] = [];
      let pos = this.offset.get(host) ?? 0;
      const buf = Buffer.alloc(64 * 1024);
      for (let n; (n = readSync(fd, buf, 0, buf.length, pos)) > 0; pos += n)
        chunks.push(Buffer.from(buf.subarray(0, n)));
      this.offset.set(host, pos);
      return Buffer.concat(chunks).toString();
    } finally {
      closeSync(fd);
    }
  }
}
