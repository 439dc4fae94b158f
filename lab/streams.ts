import { createSocket } from 'node:dgram';
import { createConnection, createServer, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';

// Long-lived connections, for the connection survival tests: `server PORT` (in the router)
// and `client DEST PORT PUSH ECHO IDLE` (in a workload).
//
// Every message the server sends names the peer it sees ("IP:PORT"), so the client can
// tell whether the far side saw the same source tuple all along.
// - push: the server sends a tick every 50 ms (the far side talks first after a move);
// - echo: the client sends a line every 50 ms and the server echoes it;
// - idle: the client says hello, then nothing until SIGUSR1, then sends and expects an echo;
// - one UDP flow: a datagram every 50 ms, echoed.
// On SIGTERM the client prints one JSON line per flow: kind, alive (a message in its last
// 500 ms, or for idle an answer after SIGUSR1), the peers the server saw, the longest gap
// between two messages received (ms), and why it ended if it did.

const TICK_MS = 50;

interface Flow {
  readonly id: string;
  readonly kind: 'push' | 'echo' | 'idle' | 'udp';
  readonly seen: Set<string>;
  last: number;
  gap: number;
  error?: string;
  used?: number;
  answeredAfterUse?: boolean;
}

const now = (): number => Number(process.hrtime.bigint() / 1_000_000n);

function server(port: number): void {
  createServer((sock) => {
    const peer = `${(sock.remoteAddress ?? '').replace(/^::ffff:/, '')}:${sock.remotePort}`;
    sock.setNoDelay(true);
    sock.on('error', () => undefined);
    let buf = '';
    let timer: NodeJS.Timeout | undefined;
    sock.on('close', () => clearInterval(timer));
    sock.on('data', (d) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === 'push' && !timer) {
          let n = 0;
          timer = setInterval(() => sock.write(`${peer} ${++n}\n`), TICK_MS);
        } else sock.write(`${peer} ${line}\n`);
      }
    });
  }).listen(port, '0.0.0.0', () => process.stdout.write(`listening ${port}\n`));
  // One UDP socket per local address: a wildcard socket would answer from the address the
  // route picks, and conntrack would not match the answer.
  for (const address of Object.values(networkInterfaces()).flatMap((a) => a ?? [])) {
    if (address.family !== 'IPv4') continue;
    const udp = createSocket('udp4');
    udp.on('message', (m, r) => udp.send(`${r.address}:${r.port} ${m.toString()}`, r.port, r.address));
    udp.on('error', () => undefined);
    udp.bind(port, address.address);
  }
}

function received(f: Flow, peer: string | undefined): void {
  const t = now();
  f.gap = Math.max(f.gap, t - f.last);
  f.last = t;
  if (peer) f.seen.add(peer);
  if (f.used !== undefined) f.answeredAfterUse = true;
}

function tcpFlow(flows: Flow[], dest: string, port: number, kind: Flow['kind'], i: number): Socket {
  const f: Flow = { id: `${kind}${i}`, kind, seen: new Set(), last: now(), gap: 0 };
  flows.push(f);
  const sock = createConnection({ host: dest, port });
  sock.setNoDelay(true);
  let buf = '';
  sock.on('connect', () => sock.write(kind === 'push' ? 'push\n' : 'hello\n'));
  sock.on('data', (d) => {
    buf += d.toString();
    for (let j = buf.indexOf('\n'); j >= 0; j = buf.indexOf('\n')) {
      received(f, buf.slice(0, j).split(' ')[0]);
      buf = buf.slice(j + 1);
    }
  });
  sock.on('error', (e) => (f.error ??= e.message));
  sock.on('close', () => (f.error ??= 'closed'));
  if (kind === 'echo') {
    let n = 0;
    const timer = setInterval(() => sock.writable && sock.write(`${++n}\n`), TICK_MS);
    sock.on('close', () => clearInterval(timer));
  }
  if (kind === 'idle')
    process.on('SIGUSR1', () => {
      f.used = now();
      f.last = f.used;
      f.gap = 0;
      if (sock.writable) sock.write('used\n');
    });
  return sock;
}

function client(dest: string, port: number, push: number, echo: number, idle: number): void {
  const flows: Flow[] = [];
  const socks: Socket[] = [];
  for (let i = 0; i < push; i++) socks.push(tcpFlow(flows, dest, port, 'push', i));
  for (let i = 0; i < echo; i++) socks.push(tcpFlow(flows, dest, port, 'echo', i));
  for (let i = 0; i < idle; i++) socks.push(tcpFlow(flows, dest, port, 'idle', i));
  const u: Flow = { id: 'udp0', kind: 'udp', seen: new Set(), last: now(), gap: 0 };
  flows.push(u);
  const udp = createSocket('udp4');
  udp.on('message', (m) => received(u, m.toString().split(' ')[0]));
  udp.on('error', (e) => (u.error ??= e.message));
  let n = 0;
  const timer = setInterval(() => udp.send(String(++n), port, dest), TICK_MS);
  process.on('SIGTERM', () => {
    clearInterval(timer);
    const t = now();
    for (const f of flows) {
      const alive = !f.error && (f.kind === 'idle' ? f.answeredAfterUse === true : t - f.last < 500);
      const gap = Math.max(f.gap, f.kind === 'idle' && !f.answeredAfterUse ? t - f.last : 0);
      process.stdout.write(
        `${JSON.stringify({ id: f.id, kind: f.kind, alive, seen: [...f.seen], gapMs: gap, error: f.error })}\n`,
      );
    }
    for (const s of socks) s.destroy();
    udp.close();
    process.exit(0);
  });
  process.stdout.write('started\n');
}

/**
 * `churn DEST PORT RATE SECONDS`: RATE new connections a second, each says hello, waits
 * for the echo (at most 3 s) and resets (no TIME_WAIT: 60,000 connections in 30 s would
 * use up the client's ports). Prints one line per connection that failed, `f START_MS`
 * (monotonic ms, the clock of every process of the machine), then `done OK FAILED`.
 */
function churn(dest: string, port: number, rate: number, seconds: number): void {
  let ok = 0;
  let failed = 0;
  let pending = 0;
  const out: string[] = [];
  const one = () => {
    const started = now();
    pending++;
    let done = false;
    const sock = createConnection({ host: dest, port });
    const finish = (good: boolean) => {
      if (done) return;
      done = true;
      pending--;
      clearTimeout(timer);
      if (good) ok++;
      else {
        failed++;
        out.push(`f ${started}\n`);
      }
      sock.resetAndDestroy();
    };
    const timer = setTimeout(() => finish(false), 3000);
    sock.on('connect', () => sock.write('hello\n'));
    sock.on('data', () => finish(true));
    sock.on('error', () => finish(false));
    sock.on('close', () => finish(false));
  };
  const begin = now();
  let sent = 0;
  // Every 10 ms, as many as the rate asks for by now (timers are late under load).
  const timer = setInterval(() => {
    const due = Math.min(rate * seconds, Math.floor(((now() - begin) * rate) / 1000));
    for (; sent < due; sent++) one();
    if (out.length) process.stdout.write(out.splice(0).join(''));
    if (sent >= rate * seconds && pending === 0) {
      clearInterval(timer);
      process.stdout.write(`done ${ok} ${failed}\n`);
      process.exit(0);
    }
  }, 10);
  process.stdout.write(`started ${begin}\n`);
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') server(Number(args[0]));
else if (mode === 'client') client(args[0]!, Number(args[1]), Number(args[2]), Number(args[3]), Number(args[4]));
else if (mode === 'churn') churn(args[0]!, Number(args[1]), Number(args[2]), Number(args[3]));
else {
  process.stderr.write('usage: streams server PORT | client DEST PORT PUSH ECHO IDLE | churn DEST PORT RATE SECONDS\n');
  process.exit(2);
}
