import netlink from './netlink-lib.js';

// Netlink sockets the daemon keeps open and lends out, instead of one per request. The
// kernel makes closing a NETLINK_NETFILTER socket wait for the nf_tables transaction that
// runs in its network namespace (nf_tables' release notifier takes the commit mutex), and a
// transaction of 100,000 set elements (ours, or anyone's on the host) runs for seconds:
// a close after each conntrack request or counter dump held the event loop, and with it
// the heartbeats, for up to a second. A pooled socket is closed only when it is spoiled
// (a dump abandoned half-way, a socket error), or by the process's exit.

export type RawSocket = InstanceType<typeof netlink.RawNetlinkSocket>;

/** Idle sockets kept per protocol; more are closed (only after that many requests ran at once). */
const MAX_IDLE = 4;
const BUFFERS = { recvBufferSize: 4 << 20, sendBufferSize: 1 << 20 };

const idle = new Map<number, RawSocket[]>();
let lastSeq = 0;

/**
 * The first of `count` sequence numbers no other request of this process uses: the answers
 * that come late, to a request that was given up, are then told apart by their number.
 */
export function takeSeqs(count = 1): number {
  if (lastSeq + count > 0x7fffffff) lastSeq = 0;
  const first = lastSeq + 1;
  lastSeq += count;
  return first;
}

const ignore = (): void => undefined;

function open(protocol: number): RawSocket {
  const sock = new netlink.RawNetlinkSocket(protocol, BUFFERS);
  // Without an 'error' listener the socket throws from its native callback, ending the process.
  sock.on('error', ignore);
  return sock;
}

/**
 * Runs `use` with a socket of `protocol` of its own. `use` adds its listeners, which are
 * removed when it ends; it calls `spoil()` when the socket may still hold a request's state
 * (a dump that did not finish, a socket error): such a socket is closed, not lent again.
 */
export async function withNetlinkSocket<T>(
  protocol: number,
  use: (sock: RawSocket, spoil: () => void) => Promise<T>,
): Promise<T> {
  const pool = idle.get(protocol) ?? [];
  idle.set(protocol, pool);
  const sock = pool.pop() ?? open(protocol);
  sock.ref();
  let spoiled = false;
  try {
    return await use(sock, () => (spoiled = true));
  } finally {
    sock.removeAllListeners('message');
    sock.removeAllListeners('error');
    sock.on('error', ignore);
    sock.unref();
    if (spoiled || pool.length >= MAX_IDLE) sock.close();
    else pool.push(sock);
  }
}
