import type { Violation } from './chaos-check.js';

// What the soak found, tallied: by kind, with the first examples, and by the faults around
// each finding (what was going on when it happened).

const EXAMPLES = 5;
/** A violation this long after a fault healed still names it: its effects may linger. */
const RECENT_MS = 1000;

/** A fault ("kill-9 h1") from its injection to its heal (ms). */
export interface FaultSpan {
  readonly what: string;
  readonly from: number;
  to?: number;
}

export interface Finding {
  count: number;
  readonly examples: Violation[];
  /** How many happened during (or within RECENT_MS after) each kind of fault. */
  readonly during: Record<string, number>;
}

export function record(
  into: Record<string, Finding>,
  kind: string,
  v: Violation,
  around: readonly Around[] = [],
): void {
  const f = (into[kind] ??= { count: 0, examples: [], during: {} });
  f.count++;
  if (f.examples.length < EXAMPLES) f.examples.push(v);
  const kinds = new Set(around.map((a) => a.kind));
  for (const k of kinds.size ? kinds : ['no fault']) f.during[k] = (f.during[k] ?? 0) + 1;
}

export interface Around {
  readonly kind: string;
  readonly text: string;
}

/** Faults in progress at `t`, and those healed at most RECENT_MS before it (their effects may linger). */
export function faultsAround(history: readonly FaultSpan[], t: number): Around[] {
  const out: Around[] = [];
  for (let i = history.length - 1; i >= 0; i--) {
    const f = history[i]!;
    if (f.to !== undefined && f.to < t - 60_000) break; // none lasts a minute
    if (f.from > t || (f.to !== undefined && f.to < t - RECENT_MS)) continue;
    const healed = f.to !== undefined && f.to < t ? ` (healed ${((t - f.to) / 1000).toFixed(1)} s before)` : '';
    out.unshift({ kind: f.what.split(' ')[0]!, text: f.what + healed });
  }
  return out;
}
