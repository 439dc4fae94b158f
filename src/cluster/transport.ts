import { createSocket, type Socket } from 'node:dgram';

// The heartbeat transport: UDP to a multicast group, or to every other node's address.
// Thin on purpose: bytes in, bytes out; the protocol lives in protocol.ts.

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
  send(message: Buffer): void;
  close(): void;
}

export type Receive = (message: Buffer, source: string) => void;

export async function openTransport(
  opts: TransportOptions,
  receive: Receive,
  onError: (e: Error) => void,
): Promise<Transport> {
  const sock: Socket = createSocket({ type: 'udp4', reuseAddr: true });
  sock.on('message', (msg, rinfo) => receive(msg, rinfo.address));
  await new Promise<void>((ok, fail) => {
    sock.once('error', fail);
    // Multicast needs the wildcard address to receive the group's datagrams.
    sock.bind(
      { port: opts.port, address: opts.mode === 'multicast' ? '0.0.0.0' : opts.local, exclusive: false },
      () => {
        sock.off('error', fail);
        ok();
      },
    );
  });
  sock.on('error', onError);
  if (opts.mode === 'multicast') {
    try {
      sock.addMembership(opts.group!, opts.local);
      sock.setMulticastInterface(opts.local);
      sock.setMulticastTTL(1); // heartbeats never leave the segment
      sock.setMulticastLoopback(false);
    } catch (e) {
      sock.close();
      throw new Error(`cannot join multicast group ${opts.group} on ${opts.local}: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }
  const destinations = opts.mode === 'multicast' ? [opts.group!] : opts.peers;
  return {
    send(message) {
      // Errors (no route while the link is down) come back asynchronously; a heartbeat is never retried.
      for (const d of destinations) sock.send(message, opts.port, d, (e) => e && onError(e));
    },
    close() {
      sock.close();
    },
  };
}
