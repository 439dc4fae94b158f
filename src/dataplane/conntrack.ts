import { ctRequests } from './conntrack-requests.js';
import { AF_INET, be32, CTA, IPCTNL_MSG_CT_DELETE } from './ctnetlink.js';
import { errnoName } from './netlink-dump.js';
import { attr, NetlinkError } from './netlink.js';

// A thin adapter over ctnetlink (NETLINK_NETFILTER) for one request: a flush of the
// connections that carry a given conntrack mark. Without tuple attributes
// the kernel's IPCTNL_MSG_CT_DELETE deletes every entry its filter (mark and mask) selects,
// in one request.

// Version 1: the kernel then honours the family (IPv4 only); with 0 it flushes every family.
const NFNETLINK_V1 = 1;

/** Deletes every IPv4 conntrack entry whose mark has `mark` under `mask`. */
export async function flushConnections(mark: number, mask: number): Promise<void> {
  let problem: string | undefined;
  // struct nfgenmsg: family, version, resource id (big endian, 0).
  const header = Buffer.from([AF_INET, NFNETLINK_V1, 0, 0]);
  const filter = Buffer.concat([attr(CTA.MARK, be32(mark)), attr(CTA.MARK_MASK, be32(mask))]);
  const [errno] = await ctRequests(IPCTNL_MSG_CT_DELETE, 0, [filter], (e) => (problem ??= e), header);
  const why = errno === undefined ? (problem ?? 'no answer') : errno !== 0 ? errnoName(errno) : undefined;
  if (why !== undefined)
    throw new NetlinkError(
      `flush conntrack entries with mark 0x${mark.toString(16)}/0x${mask.toString(16)}`,
      new Error(why),
    );
}
