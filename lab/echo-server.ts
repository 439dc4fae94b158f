import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { networkInterfaces } from 'node:os';

// Answers every TCP connection, and every UDP datagram, with the source address it
// sees, and logs it, so the lab can tell which egress IP a packet left with (and that
// nothing arrived at all). UDP echoes the datagram's first line back after the address,
// so a prober can match answers to requests.

const port = Number(process.argv[2] ?? 7);
const server = createServer((sock) => {
  const ip = (sock.remoteAddress ?? '').replace(/^::ffff:/, '');
  process.stdout.write(`seen ${ip}\n`);
  sock.on('error', () => undefined);
  sock.end(`${ip}\n`);
});
// One UDP socket per local address: a wildcard socket would answer from the address the
// route picks, not the one asked, and conntrack would not match the answer.
const addresses = Object.values(networkInterfaces())
  .flat()
  .filter((a) => a && a.family === 'IPv4')
  .map((a) => a!.address);
const sockets = addresses.map((address) => {
  const udp = createSocket('udp4');
  udp.on('message', (msg, rinfo) =>
    udp.send(`${rinfo.address} ${msg.toString().split('\n')[0]}\n`, rinfo.port, rinfo.address),
  );
  udp.on('error', () => undefined);
  return new Promise<typeof udp>((ok) => udp.bind(port, address, () => ok(udp)));
});
void Promise.all(sockets).then((udps) => {
  server.listen(port, '0.0.0.0', () => process.stdout.write(`listening ${port}\n`));
  process.on('SIGTERM', () => {
    for (const u of udps) u.close();
    server.close(() => process.exit(0));
  });
});
