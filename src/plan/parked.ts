import type { Config } from '../config/model.js';
import { candidates, floatingIPs } from './desired.js';

/**
 * Owners for the plan of a host whose daemon does not run (docs/design.md, "Stop and
 * start"): it holds no floating IP, and its selected traffic must still never leave
 * without SNAT. `last` is what its last plan said. An IP that had an owner is steered
 * on-link to the IP itself, which whoever holds it answers ARP for: the plan names the
 * last owner if it is another candidate, else some other candidate (which one does not
 * change the route). An IP that had none, or that no other node may hold, gets
 * `noGateway` (drop: the traffic waits for a daemon).
 */
export function parkedOwners(
  config: Config,
  node: string,
  last: Readonly<Record<string, string>>,
): Map<string, string> {
  const owners = new Map<string, string>();
  for (const fip of floatingIPs(config)) {
    const owner = last[fip.text];
    if (owner === undefined) continue;
    const others = candidates(config, fip)
      .map((n) => n.name)
      .filter((n) => n !== node)
      .sort();
    const heir = others.includes(owner) ? owner : others[0];
    if (heir !== undefined) owners.set(fip.text, heir);
  }
  return owners;
}
