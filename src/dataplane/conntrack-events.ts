import netlink from 'netlink';
import { parseEntry, type RawEntry } from './conntrack-entry.js';
import { AF_INET, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, NFNL_SUBSYS_CTNETLINK } from './ctnetlink.js';

// The kernel's conntrack events (what `conntrack -E` shows): new, updated and destroyed
// entries, from the ctnetlink multicast groups. The raw socket hands over one datagram
// (several messages) per callback; each is parsed at once, and a datagram that cannot be
// parsed is dropped (counted), never thrown.

const NFNLGRP_CONNTRACK_NEW = 1;
const NFNLGRP_CONNTRACK_UPDATE = 2;
const NFNLGRP_CONNTRACK_DESTROY = 3;
/** Room for bursts (2,000 new connections a second make three events each): on overflow the kernel drops events and says ENOBUFS. */
const RECV_BUFFER = 8 << 20;

export type ConntrackEvent = { readonly kind: 'update' | 'destroy'; readonly entry: RawEntry };

export interface ConntrackEvents {
  close(): void;
}

export interface EventHandlers {
  readonly events: (events: ConntrackEvent[]) => void;
  /** The socket lost events (ENOBUFS) or failed: the listener should read the table again. */
  readonly lost: (e: Error) => void;
}

/** Parses one datagram of ctnetlink events; what is not an IPv4 entry event is skipped. */
export function parseEvents(datagram: Buffer): { events: ConntrackEvent[]; bad: number } {
  const events: ConntrackEvent[] = [];
  let bad = 0;
  let messages;
  try {
    messages = netlink.parseMessages(datagram);
  } catch {
    return { events, bad: 1 };
  }
  for (const m of messages) {
    if (m.type >> 8 !== NFNL_SUBSYS_CTNETLINK || m.data.length < 4 || m.data[0] !== AF_INET) continue;
    const type = m.type & 0xff;
    if (type !== IPCTNL_MSG_CT_NEW && type !== IPCTNL_MSG_CT_DELETE) continue;
    const entry = parseEntry(m.data.subarray(4));
    if (!entry) bad++;
    else events.push({ kind: type === IPCTNL_MSG_CT_NEW ? 'update' : 'destroy', entry });
  }
  return { events, bad };
}

export function subscribeConntrack(h: EventHandlers): ConntrackEvents {
  const sock = new netlink.RawNetlinkSocket(netlink.Protocol.NETFILTER, {
    recvBufferSize: RECV_BUFFER,
    sendBufferSize: 65536,
  });
  for (const g of [NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY]) sock.addMembership(g);
  sock.on('message', (datagram) => {
    const { events } = parseEvents(datagram);
    if (events.length) h.events(events);
  });
  sock.on('error', (e) => h.lost(e));
  return { close: () => sock.close() };
}
