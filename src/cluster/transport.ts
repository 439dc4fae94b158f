import { createSocket, type Socket, type SocketOptions } from 'node:dgram';
import { isIPv4 } from 'node:net';

// The heartbeat transport: UDP to a multicast group, or to every other node's address.
// Thin on purpose: bytes in, bytes out; the protocol lives in protocol.ts.
//
// The socket never shares its port (no SO_REUSEADDR, no SO_REUSEPORT): otherwise any
// local user could bind the same address and port and receive the unicast heartbeats
// meant for this node, which would then hear no peer and take every IP. Without
// sharing, a reload cannot open a second socket on the same address and port, so a
// transport that binds where the current one is bound reuses its socket.

export interface TransportOptions {
  readonly mode: 'multicast' | 'unicast';
  readonly port: number;
  /** This node's address: the source of what it sends, and the interface multicast uses. */
  readonly local: string;
  readonly group?: string;
  /** Unicast destinations: the other nodes' addresses. */
  readonly peers: readonly string[];
}

export interface Transport {
  readonly options: TransportOptions;
  send(message: Buffer): void;
  close(): void;
}

export type Receive = (message: Buffer, source: string) => void;

/**
 * Where the socket binds. Multicast binds the wildcard, so that the port is ours on every
 * address; unicast binds the node's address, the source its peers know it by. The two
 * overlap: a reload from one mode to the other on the same port is refused (a restart,
 * or another port, does it), since closing the old socket first would open a window in
 * which another user could take the port.
 */
const bindAddress = (o: TransportOptions): string => (o.mode === 'multicast' ? '0.0.0.0' : o.local);

/** A bound socket and the transports that use it (two during a reload, until the old one closes). */
interface Bound {
  readonly sock: Socket;
  readonly address: string;
  readonly port: number;
  readonly users: TransportImpl[];
  /** The interface multicast is sent from (IP_MULTICAST_IF), set by the last sender. */
  iface?: string;
}

class TransportImpl implements Transport {
  constructor(
    readonly options: TransportOptions,
    readonly bound: Bound,
    readonly receive: Receive,
    readonly onError: (e: Error) => void,
  ) {}

  private get membership(): string | undefined {
    return this.options.mode === 'multicast' ? `${this.options.group}@${this.options.local}` : undefined;
  }

  /** Joins the group on this transport's interface, unless another user of the socket already has. */
  join(): void {
    const { group, local } = this.options;
    if (!this.membership || this.bound.users.some((u) => u !== this && u.membership === this.membership)) return;
    try {
      this.bound.sock.addMembership(group!, local);
    } catch (e) {
      throw new Error(`cannot join multicast group ${group} on ${local}: ${(e as Error).message}`, { cause: e });
    }
  }

  send(message: Buffer): void {
    const { sock } = this.bound;
    const { mode, port, local, group, peers } = this.options;
    if (mode === 'multicast' && this.bound.iface !== local) {
      sock.setMulticastInterface(local);
      this.bound.iface = local;
    }
    // Errors (no route while the link is down) come back asynchronously; a heartbeat is never retried.
    for (const d of mode === 'multicast' ? [group!] : peers) sock.send(message, port, d, (e) => e && this.onError(e));
  }

  close(): void {
    const users = this.bound.users;
    const i = users.indexOf(this);
    if (i < 0) return;
    users.splice(i, 1);
    if (!users.length) return void this.bound.sock.close();
    if (this.membership && !users.some((u) => u.membership === this.membership)) {
      try {
        this.bound.sock.dropMembership(this.options.group!, this.options.local);
      } catch {
        // The interface or its address is gone: so is the membership.
      }
    }
  }
}

/**
 * Every destination is an IPv4 address from the config: Node's default lookup would still
 * resolve it through dns.lookup and a process tick on every send.
 */
export const literalLookup: SocketOptions['lookup'] = (address, _options, done) =>
  isIPv4(address) ? done(null, address, 4) : done(new Error(`${address} is not an IPv4 address`), address, 4);

async function bind(address: string, port: number): Promise<Bound> {
  const sock: Socket = createSocket({ type: 'udp4', reuseAddr: false, lookup: literalLookup });
  await new Promise<void>((ok, fail) => {
    sock.once('error', fail);
    sock.bind({ port, address, exclusive: true }, () => {
      sock.off('error', fail);
      ok();
    });
  });
  const bound: Bound = { sock, address, port, users: [] };
  // The newest transport is the one in use (the old one only waits to be closed).
  const newest = () => bound.users[bound.users.length - 1];
  sock.on('message', (msg, rinfo) => newest()?.receive(msg, rinfo.address));
  sock.on('error', (e) => newest()?.onError(e));
  sock.setMulticastTTL(1); // heartbeats never leave the segment
  sock.setMulticastLoopback(false);
  return bound;
}

/**
 * Opens a transport for `opts`. With `current` (a reload), the new transport shares
 * current's socket when it binds the same address and port; `current` keeps working
 * until it is closed, and closing it then releases only what the new one does not use.
 */
export async function openTransport(
  opts: TransportOptions,
  receive: Receive,
  onError: (e: Error) => void,
  current?: Transport,
): Promise<Transport> {
  const shared = current instanceof TransportImpl ? current.bound : undefined;
  const reuse = shared && shared.address === bindAddress(opts) && shared.port === opts.port && shared.users.length;
  let bound: Bound;
  try {
    bound = reuse ? shared : await bind(bindAddress(opts), opts.port);
  } catch (e) {
    const busy = (e as NodeJS.ErrnoException).code === 'EADDRINUSE';
    const mine = busy && shared?.port === opts.port;
    throw new Error(
      mine
        ? `cannot change the heartbeat transport on port ${opts.port} without a restart (or another port)`
        : `cannot bind ${bindAddress(opts)}:${opts.port}: ${(e as Error).message}${busy ? ' (another process has it)' : ''}`,
      { cause: e },
    );
  }
  const t = new TransportImpl(opts, bound, receive, onError);
  try {
    t.join();
  } catch (e) {
    if (!reuse) bound.sock.close();
    throw e;
  }
  bound.users.push(t);
  return t;
}
