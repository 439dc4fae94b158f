import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { decode, encode, Flag } from '../src/cluster/protocol.js';
import { readKey } from '../src/config/key.js';

// Hostile heartbeats for the lab: the datagrams a broken or malicious peer could send.
//   inject capture KEYFILE CLUSTER GROUP PORT LOCAL_IP NODE   prints one real heartbeat of NODE, hex
//   inject attack  KEYFILE CLUSTER GROUP PORT LOCAL_IP HEX    sends it again (replay), forged
//     copies (a wrong key, saying the node leaves), damaged copies and random bytes.
// Senders do not loop multicast back to themselves, so capture runs on another host
// than the one whose heartbeat it takes; attack runs on that host (same source address).

const [mode, keyFile, cluster, group, portText, local, arg] = process.argv.slice(2);
const port = Number(portText);
const key = readKey(keyFile!);

const sock = createSocket({ type: 'udp4', reuseAddr: true });
// The attack needs only the source address: the daemon holds the port itself (no one may share it).
sock.bind(mode === 'attack' ? 0 : port, '0.0.0.0', () => {
  sock.addMembership(group!, local);
  sock.setMulticastInterface(local!);
  sock.setMulticastLoopback(false);
  if (mode === 'attack') attack(Buffer.from(arg!, 'hex'));
});

if (mode === 'capture') {
  const timer = setTimeout(() => {
    process.stderr.write(`no heartbeat of ${arg} seen\n`);
    process.exit(1);
  }, 5000);
  sock.on('message', (msg) => {
    const d = decode(msg, key, cluster!);
    if (!d.ok || d.msg.node !== arg) return;
    clearTimeout(timer);
    process.stdout.write(`${msg.toString('hex')}\n`);
    sock.close();
  });
}

function attack(real: Buffer): void {
  const d = decode(real, key, cluster!);
  if (!d.ok) throw new Error(`not a heartbeat of this cluster: ${d.reason}`);
  const sent: Record<string, number> = {};
  const send = (kind: string, b: Buffer) => {
    sock.send(b, port, group);
    sent[kind] = (sent[kind] ?? 0) + 1;
  };
  for (let i = 0; i < 5; i++) send('replay', real);
  for (let i = 0; i < 5; i++)
    send(
      'forged',
      encode({ ...d.msg, seq: d.msg.seq + 1000n + BigInt(i), flags: Flag.LEAVING, claims: [] }, randomBytes(32)),
    );
  send('damaged', real.subarray(0, real.length - 1));
  send('damaged', Buffer.concat([real, randomBytes(4096)]));
  for (let i = 0; i < 200; i++) send('random', randomBytes(1 + Math.floor(Math.random() * 600)));
  setTimeout(() => {
    process.stdout.write(`${JSON.stringify(sent)}\n`);
    sock.close();
  }, 100);
}
