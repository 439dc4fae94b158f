import { spawn } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { CANNOT_EXEC, startTied } from './tied.js';

// Gratuitous ARP through iputils' arping (Node has no AF_PACKET sockets). The kernel
// sends one on link-up (arp_notify=1); these repeat it, spaced, like keepalived's
// garp_master_repeat, for switches and hosts that missed the first.
//
// iputils arping takes only whole seconds for -i and -w, and waits a second for
// replies even in -U mode, so each announcement is one arping, spawned on our own
// schedule and stopped once it has sent (it sends as soon as it starts).

export const GARP_COUNT = 3;
export const GARP_SPACING_MS = 200;
const SEND_GRACE_MS = 150;

const ARPING = process.env['EGRESS_NATD_ARPING'] ?? 'arping';

function announceOnce(dev: string, ip: string): Promise<void> {
  const args = ['-U', '-q', '-c', '1', '-I', dev, '-s', ip, ip];
  return new Promise((resolve, reject) => {
    // Tied to the daemon: a killed daemon must not leave one behind (tied.ts).
    const child = startTied([ARPING, ...args], (c, a) => spawn(c, a, { stdio: ['ignore', 'ignore', 'pipe'] }));
    let stderr = '';
    let stopped = false;
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      stopped = true;
      child.kill('SIGTERM');
    }, SEND_GRACE_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${ARPING} ${args.join(' ')}: ${e.message} (apt-get install util-linux)`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (stopped || code === 0) resolve();
      else
        reject(
          new Error(
            `${ARPING} ${args.join(' ')} exited ${code}: ${stderr.trim()}${code === CANNOT_EXEC ? ' (apt-get install iputils-arping)' : ''}`,
          ),
        );
    });
  });
}

/**
 * Starts `count` announcements, spaced, and returns at once: the first leaves within
 * milliseconds, and a takeover must not wait for the repeats. Failures go to `onError`.
 */
export function sendGratuitousArp(
  dev: string,
  ip: string,
  onError: (e: Error) => void,
  count = GARP_COUNT,
): Promise<void> {
  // An address gone meanwhile means the IP was given up (a handover, a step back): the
  // repeats stop, and a failure it caused is no error. Asked of the kernel for this
  // process's network namespace (getifaddrs): /sys/class/net shows the namespace that
  // mounted sysfs, which under systemd-nspawn or `nsenter --net` is not always ours.
  const linkExists = () => networkInterfaces()[dev]?.some((a) => a.address === ip) ?? false;
  const all = (async () => {
    const sends: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      if (i > 0) await sleep(GARP_SPACING_MS);
      if (!linkExists()) break;
      sends.push(announceOnce(dev, ip).catch((e: Error) => (linkExists() ? onError(e) : undefined)));
    }
    await Promise.all(sends);
  })();
  return all;
}
