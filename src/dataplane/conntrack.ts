import { AF_INET, CTA, ctType, IPCTNL_MSG_CT_DELETE, openCtnetlink } from './ctnetlink.js';
import { attr, NetlinkError } from './netlink.js';

// A thin adapter over ctnetlink (NETLINK_NETFILTER) for one request: a flush of the
// connections that carry a given conntrack mark. Without tuple attributes
// the kernel's IPCTNL_MSG_CT_DELETE deletes every entry its filter (mark and mask) selects,
// in one request.

// Version 1: the kernel then honours the family (IPv4 only); with 0 it flushes every family.
const NFNETLINK_V1 = 1;

const be32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** Deletes every IPv4 conntrack entry whose mark has `mark` under `mask`. */
export async function flushConnections(mark: number, mask: number): Promise<void> {
  // A socket error ends in the request's timeout: reported like any failure.
  const sock = openCtnetlink(() => undefined);
  try {
    // struct nfgenmsg: family, version, resource id (big endian, 0).
    const header = Buffer.from([AF_INET, NFNETLINK_V1, 0, 0]);
    await sock.request(
      ctType(IPCTNL_MSG_CT_DELETE),
      [header, attr(CTA.MARK, be32(mark)), attr(CTA.MARK_MASK, be32(mask))],
      { timeout: 2000 },
    );
  } catch (e) {
    throw new NetlinkError(`flush conntrack entries with mark 0x${mark.toString(16)}/0x${mask.toString(16)}`, e);
  } finally {
    sock.socket.close();
  }
}
