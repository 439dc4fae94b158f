import { createRequire } from 'node:module';

// The parts of the netlink package egress-natd uses. Its index also loads the Wi-Fi
// (nl80211), WireGuard and generic-netlink bindings: 700 KB of generated code, about
// 5 MB of every process that talks to the kernel (the daemon, apply, release).

type Lib = typeof import('netlink');
type Used =
  | 'createNetlink'
  | 'createRtNetlink'
  | 'ifla'
  | 'parseAttributes'
  | 'parseMessages'
  | 'Protocol'
  | 'RawNetlinkSocket'
  | 'rt';

const load = createRequire(import.meta.url);
const part = (file: string): object => load(`netlink/dist/${file}`) as object;

const netlink = {
  ...part('constants'),
  ...part('raw'),
  ...part('structs'),
  ...part('netlink'),
  ...part('rt/rt'),
  rt: part('rt/structs'),
  ifla: part('rt/ifla'),
} as unknown as Pick<Lib, Used>;

export default netlink;
export type { NetlinkSocket, RtNetlinkSocket } from 'netlink';
