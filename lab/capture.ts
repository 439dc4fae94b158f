import { spawn, type ChildProcess } from 'node:child_process';
import { eachLine, run, type Lab } from './lab.js';
import { nowNs } from './traffic.js';

// What reaches the router: tcpdump in the router namespace, for the leak tests. Only
// frames addressed to the router's own MAC count: those are what it routes on. A frame
// the switch floods to every port (a steered packet whose floating IP nobody holds, sent
// to the IP's virtual MAC) reaches the router's port but is never forwarded, so a capture
// in promiscuous mode would count it as a leak although no allowlist ever sees it.

export interface Captured {
  /** Monotonic ns when the line came in. */
  readonly at: bigint;
  readonly line: string;
}

export interface Capture {
  /** Packets seen so far, one tcpdump line each (live). */
  readonly packets: () => readonly Captured[];
  stop(): Promise<readonly Captured[]>;
}

/** Starts tcpdump on the router's eth0 with `filter` (pcap syntax), restricted to frames for the router's MAC; resolves once it listens. */
/**
 * Frames addressed to the router: when a switch port goes down the bridge floods frames for
 * the floating IPs' MACs to every port, and a promiscuous capture would count those, which
 * the router drops, as traffic that reached it.
 */
export async function routerBound(lab: Lab, filter: string): Promise<string> {
  const mac = (await run(['ip', 'netns', 'exec', lab.ns('r'), 'cat', '/sys/class/net/eth0/address'])).stdout.trim();
  return `ether dst ${mac} and (${filter})`;
}

/** Resolves once tcpdump says it listens (its stderr); fails if it exits first or takes over 10 s. */
export function listening(child: ChildProcess): Promise<void> {
  let stderr = '';
  return new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`tcpdump did not start: ${stderr}`)), 10_000);
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('listening on')) {
        clearTimeout(t);
        ok();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      fail(new Error(`tcpdump exited ${code}: ${stderr}`));
    });
  });
}

export async function startCapture(lab: Lab, filter: string): Promise<Capture> {
  const child = spawn(
    'ip',
    ['netns', 'exec', lab.ns('r'), 'tcpdump', '-i', 'eth0', '-p', '-nn', '-l', await routerBound(lab, filter)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  lab.onDestroy(() => void child.kill('SIGKILL'));
  const packets: Captured[] = [];
  eachLine(child.stdout, (line) => line && packets.push({ at: nowNs(), line }));
  await listening(child);
  return {
    packets: () => packets,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(packets);
        child.once('exit', () => resolve(packets));
        child.kill('SIGINT');
      }),
  };
}
