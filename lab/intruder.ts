import { run, type Lab } from './lab.js';
import { NODE } from './paths.js';

// An unprivileged local user who wants the heartbeats: as `nobody`, inside a lab host,
// it binds the daemon's heartbeat address and port with SO_REUSEADDR, listens for
// `holdMs`, and says whether the bind worked and how many datagrams it got.

export interface Intrusion {
  /** 'bound', or the bind's error code (EADDRINUSE). */
  readonly bind: string;
  readonly received: number;
}

// Inline so that `nobody` needs to read nothing in the lab dir or the build.
const SCRIPT = `
const [address, port, holdMs] = process.argv.slice(1);
const sock = require('node:dgram').createSocket({ type: 'udp4', reuseAddr: true });
let received = 0;
sock.on('message', () => received++);
sock.on('error', (e) => { console.log(JSON.stringify({ bind: e.code ?? e.message, received })); process.exit(0); });
sock.bind(Number(port), address, () =>
  setTimeout(() => { console.log(JSON.stringify({ bind: 'bound', received })); process.exit(0); }, Number(holdMs)));
`;

export async function intrude(
  lab: Lab,
  host: string,
  address: string,
  port: number,
  holdMs: number,
): Promise<Intrusion> {
  const argv = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'];
  const { stdout } = await run(
    ['ip', 'netns', 'exec', lab.ns(host), ...argv, ...NODE, '-e', SCRIPT, address, String(port), String(holdMs)],
    { timeoutMs: holdMs + 10_000 },
  );
  return JSON.parse(stdout) as Intrusion;
}
