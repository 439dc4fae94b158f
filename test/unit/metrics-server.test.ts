import t, { type Test } from 'tap';
import { get } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Metrics, type MetricsLimits } from '../../src/daemon/metrics.js';

// The metrics endpoint must not be held by clients that connect and never finish a
// request: a connection cap, and header, request and keep-alive timeouts.

const LIMITS: MetricsLimits = {
  maxConnections: 4,
  headersTimeoutMs: 300,
  requestTimeoutMs: 600,
  keepAliveTimeoutMs: 300,
  checkIntervalMs: 100,
};

async function serve(t: Test): Promise<number> {
  const server = await new Metrics(() => {
    throw new Error('no snapshot in this test');
  }).serve(0, () => undefined, LIMITS);
  t.teardown(() => void server.close());
  return (server.address() as AddressInfo).port;
}

/** Resolves with the ms until the server closes `sock` (reading it, so that its end is seen), or Infinity after 3 s. */
const closed = (sock: Socket, since: number): Promise<number> =>
  Promise.race([
    new Promise<number>((r) => sock.resume().once('close', () => r(Date.now() - since))),
    sleep(3000, undefined, { ref: false }).then(() => Infinity),
  ]);

t.test('a client that never finishes its headers is cut off', async (t) => {
  const port = await serve(t);
  const sock = connect(port, '127.0.0.1');
  sock.on('error', () => undefined);
  sock.write('GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ');
  const ms = await closed(sock, Date.now());
  sock.destroy();
  t.ok(ms < 1500, `closed after ${ms} ms (headers timeout ${LIMITS.headersTimeoutMs} ms)`);
});

t.test('more idle connections than the cap do not block a scrape for long', async (t) => {
  const port = await serve(t);
  const start = Date.now();
  const idle = Array.from({ length: LIMITS.maxConnections + 1 }, () => connect(port, '127.0.0.1'));
  for (const s of idle) s.on('error', () => undefined);
  const gone = Promise.all(idle.map((s) => closed(s, start)));
  await sleep(50);
  let status: number | undefined;
  while (status === undefined && Date.now() - start < 3000) {
    status = await new Promise<number | undefined>((r) =>
      get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        res.resume();
        r(res.statusCode);
      }).on('error', () => r(undefined)),
    );
    if (status === undefined) await sleep(50);
  }
  const ms = Date.now() - start;
  t.equal(status, 404, `a request is answered after ${ms} ms`);
  t.ok(ms < 1500, 'within the headers timeout and a check');
  const after = Math.max(...(await gone));
  for (const s of idle) s.destroy();
  t.ok(after < 1500, `every idle connection was closed by the server (the last after ${after} ms)`);
});
