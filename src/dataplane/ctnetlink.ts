// ctnetlink's numbers (linux/netfilter/nfnetlink_conntrack.h), for every module that
// talks to the kernel's connection tracking: flush (conntrack.ts), dump, events, insert.

export const NFNL_SUBSYS_CTNETLINK = 1;
export const IPCTNL_MSG_CT_NEW = 0;
export const IPCTNL_MSG_CT_GET = 1;
export const IPCTNL_MSG_CT_DELETE = 2;
/** nlmsg type of a ctnetlink message. */
export const ctType = (msg: number): number => (NFNL_SUBSYS_CTNETLINK << 8) | msg;
export const AF_INET = 2;
/** struct nfgenmsg for IPv4, version 0, resource id 0. */
export const nfgenmsg = (): Buffer => Buffer.from([AF_INET, 0, 0, 0]);
/** Netlink header flags and message types (linux/netlink.h). */
export const NLM_F = { REQUEST: 0x1, ACK: 0x4, DUMP: 0x300, EXCL: 0x200, CREATE: 0x400 } as const;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

/** One netlink message: struct nlmsghdr (host byte order: little endian here), then `payload`. */
export function nlmsg(type: number, flags: number, seq: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(16 + payload.length, 0);
  h.writeUInt16LE(type, 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(seq >>> 0, 8);
  return Buffer.concat([h, payload]);
}

/** Status bits (enum ip_conntrack_status): a synced entry carries SEEN_REPLY and ASSURED; NAT bits are the kernel's to set. */
export const IPS_SEEN_REPLY = 1 << 1;
export const IPS_ASSURED = 1 << 2;
/** The kernel creates an entry asked for over ctnetlink already confirmed, and refuses (EBUSY) a status that would clear the bit. */
export const IPS_CONFIRMED = 1 << 3;
export const IPS_SRC_NAT = 1 << 4;
export const IPS_DST_NAT = 1 << 5;

/** A 32-bit big-endian attribute value (marks, status, timeout). */
export const be32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** The kernel parses some nested attributes strictly: a nested attribute must say so. */
export const NLA_F_NESTED = 0x8000;

export const CTA = {
  TUPLE_ORIG: 1,
  TUPLE_REPLY: 2,
  STATUS: 3,
  PROTOINFO: 4,
  NAT_SRC: 6,
  TIMEOUT: 7,
  MARK: 8,
  MARK_MASK: 21,
  FILTER: 25,
  STATUS_MASK: 26,
} as const;
export const CTA_TUPLE = { IP: 1, PROTO: 2 } as const;
export const CTA_IP = { V4_SRC: 1, V4_DST: 2 } as const;
export const CTA_PROTO = { NUM: 1, SRC_PORT: 2, DST_PORT: 3 } as const;
