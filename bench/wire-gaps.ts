import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { listening } from '../lab/capture.js';
import { run, type Lab } from '../lab/lab.js';
import { pct } from './unplanned.js';

// Heartbeats as the segment sees them: tcpdump on the switch's ports (inbound only, so each
// datagram is seen once, as its sender's port receives it), with kernel timestamps, so that
// the gaps are the senders' own and not the lateness of whoever reads them. A gap of
// missed × interval or more makes the peers call the sender Down.

export interface Gaps {
  readonly node: string;
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  /** Gaps of at least 2 intervals, and of at least `missed` intervals (the Down threshold). */
  readonly over2: number;
  readonly overDown: number;
}

export class WireGaps {
  private readonly file: string;
  private capture?: ChildProcess;

  constructor(
    private readonly lab: Lab,
    private readonly port: number,
  ) {
    this.file = join(lab.dir, 'heartbeats.pcap');
  }

  /** Starts tcpdump; resolves once it listens. */
  async start(): Promise<void> {
    const child = spawn(
      'ip',
      [
        ...['netns', 'exec', this.lab.ns('sw'), 'tcpdump', '-i', 'any', '-Q', 'in', '-n', '-s', '96', '-U'],
        ...['-w', this.file, `udp port ${this.port}`],
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.capture = child;
    this.lab.onDestroy(() => void child.kill('SIGKILL'));
    await listening(child);
  }

  /** Stops the capture; the gaps per sending node (by address, named with `names`). */
  async stop(intervalMs: number, missed: number, names: ReadonlyMap<string, string>): Promise<Gaps[]> {
    const c = this.capture!;
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGINT');
      await exited;
    }
    // Read in the switch's namespace: the file names interfaces by index.
    const { stdout } = await run([
      ...['ip', 'netns', 'exec', this.lab.ns('sw'), 'tcpdump', '-r', this.file, '-n', '-tt', `udp port ${this.port}`],
    ]);
    const last = new Map<string, number>();
    const gaps = new Map<string, number[]>();
    for (const line of stdout.split('\n')) {
      // 1795374683.630123 p-h1 M   IP 192.168.1.1.41234 > 239.255.76.67.7607: UDP, length 180
      // Only the switch ports (p-<host>): the bridge device itself takes in every multicast
      // datagram a second time.
      const m = /^(\d+\.\d+) p-\S+ +\S+ +IP (\d+\.\d+\.\d+\.\d+)\.\d+ >/.exec(line);
      if (!m) continue;
      const [at, src] = [Number(m[1]) * 1000, m[2]!];
      const prev = last.get(src);
      if (prev !== undefined) {
        if (!gaps.has(src)) gaps.set(src, []);
        gaps.get(src)!.push(at - prev);
      }
      last.set(src, at);
    }
    return [...gaps].map(([src, xs]) => ({
      node: names.get(src) ?? src,
      count: xs.length,
      p50: pct(xs, 50),
      p99: pct(xs, 99),
      max: Math.max(...xs),
      over2: xs.filter((x) => x >= 2 * intervalMs).length,
      overDown: xs.filter((x) => x >= missed * intervalMs).length,
    }));
  }
}
