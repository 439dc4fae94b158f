import netlink from './netlink-lib.js';

// The child process that listens to the kernel's conntrack events for the daemon
// (conntrack-events.ts): each datagram goes to stdout as it came, after its length (u32,
// big endian). It parses nothing, so that it keeps up with bursts.
//
// Why a child: when the kernel drops events because the socket's buffer is full, it
// reports ENOBUFS as a socket error; the netlink binding then throws from inside a libuv
// callback (its poll handler builds the error with a null string), which ends the process.
// Here that ends this child only: the daemon starts another and reads the table again.

const NFNLGRP_CONNTRACK_NEW = 1;
const NFNLGRP_CONNTRACK_UPDATE = 2;
const NFNLGRP_CONNTRACK_DESTROY = 3;
/** Capped by net.core.rmem_max. */
const RECV_BUFFER = 8 << 20;
/** Exit code: the kernel said events were lost (a read error the binding reported). */
const EVENTS_LOST = 3;

const sock = new netlink.RawNetlinkSocket(netlink.Protocol.NETFILTER, {
  recvBufferSize: RECV_BUFFER,
  sendBufferSize: 4096,
});
for (const g of [NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY]) sock.addMembership(g);
sock.on('message', (datagram) => {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(datagram.length);
  process.stdout.write(Buffer.concat([len, datagram]));
});
sock.on('error', () => process.exit(EVENTS_LOST));
process.stdout.on('error', () => process.exit(1));
process.stdout.write('ready\n');
