import type { DaemonStatus } from './lab.js';
import { waitUntil } from './cluster.js';
import type { Machine, MachineLab } from './machines.js';

// The cluster as the machines lab sees it: every question goes through the machine, as an
// operator's would (`egress-natd status` on it, `ip addr` in its network namespace).

/** `egress-natd status -o json` on a machine (its daemon's control socket). */
export async function machineStatus(m: Machine): Promise<DaemonStatus> {
  return JSON.parse((await m.exec(['egress-natd', 'status', '-o', 'json'])).stdout) as DaemonStatus;
}

/** Machines whose kernel holds `ip`. */
export async function holders(ml: MachineLab, names: readonly string[], ip: string): Promise<string[]> {
  const held = await Promise.all(
    names.map(async (n) => {
      const r = await ml.lab.sh(n, `ip -o -4 addr show to ${ip}/32`, { allowFail: true });
      return r.stdout.includes(ip) ? n : '';
    }),
  );
  return held.filter(Boolean);
}

/**
 * Waits until the daemons on `running` are ready and agree on the owners, and each owner
 * (alone among them) holds its IP; returns the owners. Polls slowly: each poll starts a
 * CLI on each machine, and the daemons under test share two cores.
 */
export async function settledMachines(
  ml: MachineLab,
  running: readonly string[],
  timeoutMs = 20_000,
): Promise<Record<string, string>> {
  return waitUntil(
    `${running.join(',')} to agree and hold their IPs`,
    async () => {
      const all = await Promise.all(running.map((n) => machineStatus(ml.machine(n))));
      if (!all.every((s) => s.ready)) return undefined;
      const owners = JSON.stringify(all[0]!.floatingIPs);
      if (!all.every((s) => JSON.stringify(s.floatingIPs) === owners)) return undefined;
      for (const [ip, owner] of Object.entries(all[0]!.floatingIPs)) {
        const held = await holders(ml, running, ip);
        if (owner ? held.join() !== owner : held.length) return undefined;
      }
      return all[0]!.floatingIPs as Record<string, string>;
    },
    timeoutMs,
    250,
  );
}

/** The service's main PID on a machine (0 when it does not run), and its restart count. */
export async function mainPid(m: Machine): Promise<{ pid: number; restarts: number; state: string }> {
  const p = await m.show(['MainPID', 'NRestarts', 'ActiveState']);
  return { pid: Number(p['MainPID']), restarts: Number(p['NRestarts']), state: p['ActiveState']! };
}
