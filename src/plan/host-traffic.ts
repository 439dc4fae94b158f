import type { NodeSpec } from '../config/model.js';
import { formatCidr, type Range } from '../util/ip.js';

// Host-originated traffic selected by a source CIDR (docs/datapath.md, "The nft table"):
// a policy whose CIDR covers the node's own address selects what the host itself sends
// from that address, as `cgroups` select local processes. The output chain then looks the
// source up too, after the cgroups.

/** Multicast (the heartbeats' group) is never steered, nor the node's own subnet (peers, floating IPs, the router). */
export const HOST_EXEMPT_MULTICAST = '224.0.0.0/4';

/**
 * The output rules that steer this host's own traffic by source address, or none when no
 * policy source covers the node's address (the lookup would then cost every local packet
 * for nothing). `sourceLookup` is the name of the source map prerouting uses.
 */
export function hostSourceRules(
  node: NodeSpec,
  sources: readonly { readonly range: Range }[],
  sourceLookup: string | undefined,
): string[] {
  const own = node.address;
  const covered = sources.some(
    ({ range }) => range.family === own.family && range.start <= own.value && own.value <= range.end,
  );
  if (!covered || !sourceLookup) return [];
  return [
    `ip daddr ${formatCidr(node.subnet)} return`,
    `ip daddr ${HOST_EXEMPT_MULTICAST} return`,
    `ip saddr vmap @${sourceLookup}`,
  ];
}
