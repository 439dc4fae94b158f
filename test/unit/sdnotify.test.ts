import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DgramSocket } from 'node-unix-socket';
import { notifyAddress, notifyMessage, systemdNotifier, watchdogInterval } from '../../src/daemon/sdnotify.js';

// sd_notify against a real unix datagram socket, as systemd's end of NOTIFY_SOCKET.

t.test('the datagram: KEY=VALUE lines; a value never spans lines', async (t) => {
  t.equal(
    notifyMessage({ READY: 1, STATUS: 'owner of 192.168.1.100; 3/3 nodes up' }),
    'READY=1\nSTATUS=owner of 192.168.1.100; 3/3 nodes up',
  );
  t.equal(notifyMessage({ STATUS: 'a\nb\r\nc' }), 'STATUS=a b c', 'a newline in a value would start a new assignment');
});

t.test('socket address: a path, or "@name" for the abstract namespace', async (t) => {
  t.equal(notifyAddress('/run/systemd/notify'), '/run/systemd/notify');
  t.equal(notifyAddress('@/org/freedesktop/systemd1/notify/42'), '\0/org/freedesktop/systemd1/notify/42');
});

t.test('watchdog: half of WATCHDOG_USEC, only for the PID systemd named', async (t) => {
  t.equal(watchdogInterval({ WATCHDOG_USEC: '10000000' }, 42), 5000);
  t.equal(watchdogInterval({ WATCHDOG_USEC: '10000000', WATCHDOG_PID: '42' }, 42), 5000);
  t.equal(
    watchdogInterval({ WATCHDOG_USEC: '10000000', WATCHDOG_PID: '43' }, 42),
    undefined,
    'meant for another process (a child of ours, say)',
  );
  t.equal(watchdogInterval({}, 42), undefined);
  t.equal(watchdogInterval({ WATCHDOG_USEC: 'soon' }, 42), undefined);
  t.equal(watchdogInterval({ WATCHDOG_USEC: '0' }, 42), undefined);
});

/** systemd's side: a bound unix datagram socket that collects what arrives. */
function listen(address: string): { received: string[]; close(): void } {
  const sock = new DgramSocket();
  sock.bind(address);
  const received: string[] = [];
  sock.on('data', (buf: Buffer) => received.push(buf.toString()));
  return { received, close: () => sock.close() };
}

const until = async (cond: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
};

t.test('messages reach a socket bound at a path', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'enat-notify-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'notify.sock');
  const systemd = listen(path);
  t.teardown(() => systemd.close());
  const errors: Error[] = [];
  const n = await systemdNotifier({ NOTIFY_SOCKET: path, WATCHDOG_USEC: '400000' }, (e) => errors.push(e));
  t.equal(n.watchdogIntervalMs, 200);
  n.send({ READY: 1, STATUS: 'standby; 1/1 nodes up' });
  n.send({ WATCHDOG: 1 });
  n.send({ RELOADING: 1, MONOTONIC_USEC: '123' });
  await until(() => systemd.received.length === 3);
  t.same(
    systemd.received,
    ['READY=1\nSTATUS=standby; 1/1 nodes up', 'WATCHDOG=1', 'RELOADING=1\nMONOTONIC_USEC=123'],
    'one datagram per notification, in order',
  );
  n.close();
  n.send({ READY: 1 });
  await new Promise((r) => setTimeout(r, 50));
  t.equal(systemd.received.length, 3, 'nothing after close');
  t.same(errors, []);
});

t.test('messages reach a socket in the abstract namespace', async (t) => {
  const name = `enat-notify-${process.pid}-${Date.now()}`;
  const systemd = listen(`\0${name}`);
  t.teardown(() => systemd.close());
  const n = await systemdNotifier({ NOTIFY_SOCKET: `@${name}` }, () => {});
  t.teardown(() => n.close());
  n.send({ READY: 1 });
  await until(() => systemd.received.length === 1);
  t.same(systemd.received, ['READY=1']);
  t.equal(n.watchdogIntervalMs, undefined, 'no WATCHDOG_USEC: no pings');
});

t.test('a missing socket is an error reported, not thrown', async (t) => {
  const errors: Error[] = [];
  const n = await systemdNotifier({ NOTIFY_SOCKET: '/nonexistent/notify.sock' }, (e) => errors.push(e));
  t.teardown(() => n.close());
  n.send({ READY: 1 });
  await until(() => errors.length > 0);
  t.match(errors[0]?.message, /sd_notify to \/nonexistent\/notify\.sock: .*No such file/);
});

t.test('outside systemd (no NOTIFY_SOCKET) it does nothing', async (t) => {
  const n = await systemdNotifier({}, () => t.fail('no error expected'));
  n.send({ READY: 1 });
  n.close();
  t.equal(n.watchdogIntervalMs, undefined);
});
