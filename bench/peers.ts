import { createSocket, type Socket } from 'node:dgram';
import { encode, Flag } from '../src/cluster/protocol.js';
import { readKey } from '../src/config/key.js';

// Simulated peers for the daemon benchmark: N nodes speaking the real protocol with the
// real key, each from its own address (run in a lab namespace that holds them all).
//   peers KEYFILE CLUSTER GROUP PORT INTERVAL_MS DIGEST NAME=ADDRESS...

const [keyFile, cluster, group, portText, intervalText, digest, ...peers] = process.argv.slice(2);
const key = readKey(keyFile!);
const port = Number(portText);
const incarnation = BigInt(Date.now()) * 1000n;
let seq = 0n;
let sent = 0;

const sockets = peers.map((p) => {
  const [name, address] = p.split('=') as [string, string];
  const sock: Socket = createSocket({ type: 'udp4', reuseAddr: true });
  sock.on('error', () => undefined);
  sock.bind(0, address, () => {
    sock.setMulticastInterface(address);
    sock.setMulticastTTL(1);
  });
  return { name, sock };
});

const timer = setInterval(() => {
  seq += 1n;
  for (const { name, sock } of sockets) {
    sock.send(
      encode({ cluster: cluster!, node: name, flags: Flag.READY, incarnation, seq, digest: digest!, claims: [] }, key),
      port,
      group,
    );
    sent++;
  }
}, Number(intervalText));
process.on('SIGTERM', () => {
  clearInterval(timer);
  process.stdout.write(`${sent}\n`);
  for (const { sock } of sockets) sock.close();
});
