import netlink from './netlink-lib.js';

// Netlink sockets the daemon keeps open and lends out, instead of one per request. The
// kernel makes closing a NETLINK_NETFILTER socket wait for the nf_tables transaction that
// runs in its network namespace (nf_tables' release notifier takes the commit mutex), and a
// transaction of 100,000 set elements (ours, or anyone's on the host) runs for seconds:
// a close after each conntrack request or counter dump held the event loop, and with it
// the heartbeats, for up to a second. A socket a request left unfit (a dump given up
// half-way) is retired, not closed: a few are kept aside, unused, until the process exits.

export type RawSocket = InstanceType<typeof netlink.RawNetlinkSocket>;

const BUFFERS = { recvBufferSize: 4 << 20, sendBufferSize: 1 << 20 };
/** Retired sockets kept open; beyond that the oldest is closed (a dump given up that often means worse trouble). */
const MAX_RETIRED = 8;

/** Idle sockets per protocol: as many as requests ever ran at once. */
const idle = new Map<number, RawSocket[]>();
const retired: RawSocket[] = [];
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

/** An idle socket, referenced; one the library closed under us (its poll failed) is dropped. */
function lend(protocol: number, pool: RawSocket[]): RawSocket {
  for (let sock = pool.pop(); sock; sock = pool.pop()) {
    try {
      sock.ref();
      return sock;
    } catch {
      // "Netlink socket is closed": forget it.
    }
  }
  return open(protocol);
}

function retire(sock: RawSocket): void {
  retired.push(sock);
  if (retired.length > MAX_RETIRED) retired.shift()?.close();
}

/**
 * Runs `use` with a socket of `protocol` of its own. `use` adds its listeners, which are
 * removed when it ends; it calls `spoil()` when the socket may still hold a request's state
 * (a dump that did not finish): such a socket is not lent again.
 */
export async function withNetlinkSocket<T>(
  protocol: number,
  use: (sock: RawSocket, spoil: () => void) => Promise<T>,
): Promise<T> {
  const pool = idle.get(protocol) ?? [];
  idle.set(protocol, pool);
  const sock = lend(protocol, pool);
  let spoiled = false;
  try {
    return await use(sock, () => (spoiled = true));
  } finally {
    sock.removeAllListeners('message');
    sock.removeAllListeners('error');
    sock.on('error', ignore);
    try {
      sock.unref();
      if (spoiled) retire(sock);
      else pool.push(sock);
    } catch {
      // Closed under us: nothing to keep.
    }
  }
}
