import { createServer } from 'node:net';

// Answers every TCP connection with the source address it sees, and logs it, so the
// lab can tell which egress IP a packet left with (and that nothing arrived at all).

const port = Number(process.argv[2] ?? 7);
const server = createServer((sock) => {
  const ip = (sock.remoteAddress ?? '').replace(/^::ffff:/, '');
  process.stdout.write(`seen ${ip}\n`);
  sock.on('error', () => undefined);
  sock.end(`${ip}\n`);
});
server.listen(port, '0.0.0.0', () => process.stdout.write(`listening ${port}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
