import { createSocket } from 'node:dgram';

// A steady stream of UDP requests to the echo server, one every `intervalMs`, each on a
// fresh source port so that every request is a new connection through the NAT. Prints
// `s SEQ T` for every request sent and `r SEQ T IP` for every answer, T in monotonic
// nanoseconds (process.hrtime, the same clock in every process of the machine).

const [dest, portText, intervalText] = process.argv.slice(2);
const port = Number(portText ?? 7);
const intervalMs = Number(intervalText ?? 5);
let seq = 0;
const out: string[] = [];
const flush = () => {
  if (out.length) process.stdout.write(out.splice(0).join(''));
};
const timer = setInterval(() => {
  const n = ++seq;
  const s = createSocket('udp4');
  s.on('error', () => s.close());
  s.on('message', (m) => {
    const [ip, echoed] = m.toString().trim().split(' ');
    if (echoed === String(n)) out.push(`r ${n} ${process.hrtime.bigint()} ${ip}\n`);
    s.close();
  });
  out.push(`s ${n} ${process.hrtime.bigint()}\n`);
  s.send(String(n), port, dest);
  setTimeout(() => {
    try {
      s.close();
    } catch {
      /* closed on answer */
    }
  }, 2000).unref();
}, intervalMs);
const flusher = setInterval(flush, 50);
process.on('SIGTERM', () => {
  clearInterval(timer);
  setTimeout(() => {
    clearInterval(flusher);
    flush();
    process.exit(0);
  }, 300);
});
