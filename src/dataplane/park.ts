import type { Config } from '../config/model.js';
import { plan } from '../plan/desired.js';
import { parkedOwners } from '../plan/parked.js';
import { hostFacts } from './facts.js';
import { nftChange } from './nftdiff.js';
import { reconcile, releaseFloatingIPs, type ReconcileOptions, type ReconcileResult } from './reconcile.js';

// Parking: what a host keeps while no daemon runs on it (docs/design.md, "Stop and
// start"). The daemon parks its host when it stops; systemd parks it again after the
// daemon ended, however it ended (ExecStopPost=egress-natd release --keep-steering), for
// a daemon that crashed or was killed could not. `release` alone is the uninstall.

export interface ParkResult extends ReconcileResult {
  /** How the steering was left: re-planned without floating IPs, or as found (with why). */
  readonly steering: 'parked' | `as found: ${string}`;
}

/**
 * Removes the floating IPs, then steers this host's selected traffic as the last plan
 * did, except that what it held goes on-link to the IP (its next holder answers) or is
 * dropped. Without a usable config or record it leaves the steering as found: with the
 * macvlans gone that still never sends a selected packet out un-SNATed (SNAT by mark
 * stays in the nft table), it only breaks the flows of what this host held.
 */
export async function park(config: Config | undefined, node: string, opts: ReconcileOptions): Promise<ParkResult> {
  const { changes } = await releaseFloatingIPs(opts);
  const { applied } = await opts.state.load();
  const asFound = (why: string): ParkResult => {
    opts.log.warn({ why }, `steering left as found: ${why}`);
    return { changes, steering: `as found: ${why}` };
  };
  if (!applied) return asFound('no plan was applied on this host since the last release');
  if (!config) return asFound('no valid config');
  if (applied.node !== node) return asFound(`the last plan was for node ${applied.node}, not ${node}`);
  let desired;
  try {
    const owners = parkedOwners(config, node, applied.owners);
    desired = plan(config, node, owners, { ...hostFacts(config), indexes: new Map(Object.entries(applied.indexes)) });
  } catch (e) {
    return asFound((e as Error).message);
  }
  const { nft, ...host } = desired;
  const parked = await reconcile(host, (have) => nftChange(nft, have), { ...opts, noGarp: true });
  return { changes: [...changes, ...parked.changes], steering: 'parked' };
}
