// systemd's notify protocol (sd_notify(3)): newline-separated KEY=VALUE datagrams on the
// unix datagram socket named by $NOTIFY_SOCKET. Node's core has no unix datagram sockets,
// so the datagram goes out through node-unix-socket (an N-API addon with prebuilt
// binaries, no install script). It sends from the main PID, so the unit keeps the default
// NotifyAccess=main; spawning /usr/bin/systemd-notify instead would need
// NotifyAccess=all and a fork for every watchdog ping. The addon (5 MB of RSS) is loaded
// only under systemd.

export interface Notifier {
  /** Half the watchdog timeout, when systemd asked for pings (WATCHDOG_USEC, for this PID). */
  readonly watchdogIntervalMs?: number;
  send(fields: Readonly<Record<string, string | number>>): void;
  close(): void;
}

/** Outside systemd: notifications go nowhere. */
export const silentNotifier: Notifier = { send() {}, close() {} };

/** The datagram for one notification; values must be single lines. */
export function notifyMessage(fields: Readonly<Record<string, string | number>>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${String(v).replace(/[\r\n]+/g, ' ')}`)
    .join('\n');
}

/** The socket address: a path, or (leading "@") a name in the abstract namespace. */
export function notifyAddress(socket: string): string {
  return socket.startsWith('@') ? `\0${socket.slice(1)}` : socket;
}

/** How often to ping: half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; only for the PID it names. */
export function watchdogInterval(env: NodeJS.ProcessEnv, pid: number): number | undefined {
  const usec = Number(env['WATCHDOG_USEC']);
  if (!Number.isInteger(usec) || usec <= 0) return undefined;
  if (env['WATCHDOG_PID'] !== undefined && Number(env['WATCHDOG_PID']) !== pid) return undefined;
  return Math.max(1, Math.floor(usec / 2000));
}

/** CLOCK_MONOTONIC in µs, which RELOADING=1 carries (systemd ≥ 253 checks it; older ones ignore it). */
export const monotonicUsec = (): bigint => process.hrtime.bigint() / 1000n;

/**
 * A notifier for $NOTIFY_SOCKET, or one that does nothing when the daemon does not run
 * under systemd. Send errors go to `onError`; they never stop the daemon.
 */
export async function systemdNotifier(env: NodeJS.ProcessEnv, onError: (e: Error) => void): Promise<Notifier> {
  const target = env['NOTIFY_SOCKET'];
  const watchdogIntervalMs = watchdogInterval(env, process.pid);
  if (!target) return silentNotifier;
  const address = notifyAddress(target);
  const { DgramSocket } = await import('node-unix-socket');
  const sock = new DgramSocket();
  sock.on('error', onError);
  let closed = false;
  return {
    ...(watchdogIntervalMs ? { watchdogIntervalMs } : {}),
    send(fields) {
      if (closed) return;
      const buf = Buffer.from(notifyMessage(fields));
      try {
        sock.sendTo(
          buf,
          0,
          buf.length,
          address,
          (e) => e && onError(new Error(`sd_notify to ${target}: ${e.message}`)),
        );
      } catch (e) {
        onError(new Error(`sd_notify to ${target}: ${(e as Error).message}`));
      }
    },
    close() {
      if (closed) return;
      closed = true;
      sock.close();
    },
  };
}
