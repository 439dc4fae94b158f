import t from 'tap';
import netlink from '../../src/dataplane/netlink-lib.js';
import { takeSeqs, withNetlinkSocket, type RawSocket } from '../../src/dataplane/netlink-pool.js';

// The pool lends the same socket again (a close would wait for any nf_tables transaction
// in progress), closes a spoiled one, and hands out sequence numbers no other request uses.

const NETFILTER = netlink.Protocol.NETFILTER;

t.test("a socket given back is lent again, without the last user's listeners", async (t) => {
  let first: RawSocket | undefined;
  await withNetlinkSocket(NETFILTER, async (sock) => {
    first = sock;
    sock.on('message', () => undefined);
  });
  await withNetlinkSocket(NETFILTER, async (sock) => {
    t.equal(sock, first, 'the same socket');
    t.equal(sock.listenerCount('message'), 0, 'no listener of the last user');
    t.equal(sock.listenerCount('error'), 1, 'one error listener: the pool keeps errors from ending the process');
  });
});

t.test('requests at once get sockets of their own', async (t) => {
  const seen = new Set<RawSocket>();
  await Promise.all(
    [1, 2, 3].map(() =>
      withNetlinkSocket(NETFILTER, async (sock) => {
        seen.add(sock);
        await new Promise((r) => setTimeout(r, 10));
      }),
    ),
  );
  t.equal(seen.size, 3);
});

t.test('a spoiled socket is retired: not lent again, and not closed (a close may wait for nft)', async (t) => {
  let spoiled: RawSocket | undefined;
  let closed = 0;
  await withNetlinkSocket(NETFILTER, async (sock, spoil) => {
    spoiled = sock;
    sock.once('close', () => closed++);
    spoil();
  });
  t.equal(closed, 0, 'not closed');
  await withNetlinkSocket(NETFILTER, async (sock) => t.not(sock, spoiled, 'a different socket next'));
});

t.test('a socket closed under the pool is not lent', async (t) => {
  let dead: RawSocket | undefined;
  await withNetlinkSocket(NETFILTER, async (sock) => {
    dead = sock;
  });
  dead!.close();
  await withNetlinkSocket(NETFILTER, async (sock) => {
    t.not(sock, dead, 'another one');
    t.doesNotThrow(() => sock.address(), 'open');
  });
});

t.test("a user's error comes through; the socket is kept unless the user spoiled it", async (t) => {
  let used: RawSocket | undefined;
  await t.rejects(
    withNetlinkSocket(NETFILTER, async (sock) => {
      used = sock;
      throw new Error('the kernel refused it: ENOENT');
    }),
    /ENOENT/,
  );
  await withNetlinkSocket(NETFILTER, async (sock) => t.equal(sock, used, 'lent again'));
});

t.test('sequence numbers: consecutive, never reused, wrapping before 2^31', async (t) => {
  const a = takeSeqs(256);
  const b = takeSeqs();
  t.equal(b, a + 256, 'the next one after a range');
  let last = takeSeqs();
  for (let i = 0; i < 10; i++) {
    const n = takeSeqs(0x10000000);
    t.ok(n > 0 && n + 0x10000000 - 1 <= 0x7fffffff, 'in range');
    t.not(n, last);
    last = n;
  }
});
