import { statSync } from 'node:fs';
import type { Config } from '../config/model.js';
import type { HostFacts } from '../plan/desired.js';

/** nft resolves cgroup paths when it loads a rule, so only existing cgroups can be planned. */
export function hostFacts(config: Config): HostFacts {
  const root = process.env['EGRESS_NATD_CGROUP_ROOT'] ?? '/sys/fs/cgroup';
  const exists = (p: string): boolean => {
    try {
      return statSync(`${root}/${p}`).isDirectory();
    } catch {
      return false;
    }
  };
  return { cgroups: new Set(config.workloads.flatMap((w) => w.cgroups).filter(exists)) };
}
