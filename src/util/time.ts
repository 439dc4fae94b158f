import { performance } from 'node:perf_hooks';

/** Milliseconds on the monotonic clock: for timeouts and durations, never for dates. */
export const monotonicMs = (): number => performance.now();
