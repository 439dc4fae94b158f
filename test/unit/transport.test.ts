import t from 'tap';
import { createSocket } from 'node:dgram';
import { openTransport, type TransportOptions } from '../../src/cluster/transport.js';

// The heartbeat socket shares its port with no one, and a reload to the same address
// and port reuses it instead of binding a second one (which would fail).

const PORT = 47000 + Math.floor(Math.random() * 1000);
const unicast = (peers: string[]): TransportOptions => ({ mode: 'unicast', port: PORT, local: '127.0.0.1', peers });

/** The error code of another socket's bind to 127.0.0.1:PORT with SO_REUSEADDR, or 'bound'. */
async function intrude(): Promise<string> {
  const s = createSocket({ type: 'udp4', reuseAddr: true });
  const result = await new Promise<string>((r) => {
    s.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
    s.bind(PORT, '127.0.0.1', () => r('bound'));
  });
  s.close();
  return result;
}

t.test('no other socket can share the port, and a reload with other peers keeps the socket', async (t) => {
  const got: string[] = [];
  const fail = (e: Error) => t.fail(e.message);
  const first = await openTransport(unicast(['127.0.0.2']), (m) => got.push(`first:${m.toString()}`), fail);
  t.equal(await intrude(), 'EADDRINUSE', 'a SO_REUSEADDR bind of the same address and port is refused');
  const second = await openTransport(unicast(['127.0.0.3']), (m) => got.push(`second:${m.toString()}`), fail, first);
  first.close();
  t.equal(await intrude(), 'EADDRINUSE', 'the socket stays open after the old transport closed');
  const peer = createSocket('udp4');
  peer.send('hi', PORT, '127.0.0.1');
  while (!got.length) await new Promise((r) => setTimeout(r, 10));
  t.same(got, ['second:hi'], 'the new transport receives');
  peer.close();
  second.close();
  t.equal(await intrude(), 'bound', 'closing the last user frees the port');
});
