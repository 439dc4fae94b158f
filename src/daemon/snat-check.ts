import { dumpConnections, type Connection } from '../dataplane/conntrack-dump.js';
import { portPressure } from './snat-ports.js';

// The SNAT port check in a process of its own (snat-watch.ts starts it): parsing a dump of
// 100,000 connections takes about a second of CPU, and the daemon's event loop must not
// stall that long (its heartbeats would stop and peers would call it Down).
// Usage: node snat-check.js IP... → the port pressure of each IP as JSON on stdout.

/** Connections SNATed to `ip`, filtered by the kernel; a kernel without the filter (before 5.9) gets the whole table. */
async function snatedTo(ip: string): Promise<Connection[]> {
  try {
    return await dumpConnections(ip);
  } catch {
    return (await dumpConnections()).filter((c) => c.reply.dst === ip);
  }
}

const ips = process.argv.slice(2);
Promise.all(ips.map(snatedTo)).then(
  (all) => process.stdout.write(JSON.stringify(portPressure(all.flat(), ips))),
  (e: Error) => {
    process.stderr.write(e.message);
    process.exit(1);
  },
);
