import { getPriority, setPriority } from 'node:os';

// Heartbeats are sent, heard and expired on the event loop's thread. On a busy host (a
// transaction of 100,000 set elements, the workloads themselves) that thread waits for a
// core like any other, and the peers call the node Down. Like corosync (real-time) and
// keepalived (vrrp_priority), the daemon runs its loop's thread above normal priority.
// What the loop starts (nft, the monitors, the planner's thread) runs at normal priority:
// heavy work must not gain from it. Linux keeps the nice value per thread, and a new thread
// or child inherits it from the thread that made it.

/** The loop thread's nice value: well above the workloads (a weight of ~9 to 1 at nice 0). */
export const LOOP_NICE = -10;

/** The nice value of what the loop starts, once the loop's priority was set (undefined before). */
let startedNice: number | undefined;

export type Raised = { readonly from: number; readonly to: number } | { readonly from: number; readonly error: string };

/**
 * Runs the calling thread (the loop's) at `nice`: it lowers the value itself (root, or
 * CAP_SYS_NICE), or finds it set already (the unit's Nice=). What it starts afterwards
 * runs at nice 0, or at the process's own value if that is lower in priority.
 */
export function raiseLoopPriority(nice = LOOP_NICE): Raised {
  const from = getPriority(0);
  startedNice = Math.max(from, 0);
  if (from <= nice) return { from, to: from };
  try {
    setPriority(0, nice);
  } catch (e) {
    return { from, error: (e as Error).message };
  }
  return { from, to: nice };
}

/** The nice value for what the loop starts (undefined: the loop's priority was never set). */
export const startedPriority = (): number | undefined => startedNice;

/** Puts a child the loop started at the priority of what it starts (a child that is gone is no matter). */
export function lowerStarted(pid: number | undefined, nice = startedNice): void {
  if (pid === undefined || nice === undefined) return;
  try {
    setPriority(pid, nice);
  } catch {
    // Exited already: nothing runs at the loop's priority.
  }
}

/** In a thread the loop made: down to the priority of what the loop starts. */
export function lowerThisThread(nice: number | undefined): void {
  if (nice !== undefined) lowerStarted(0, nice);
}
