import { monitorEventLoopDelay } from 'node:perf_hooks';

// The daemon's own lag: heartbeats leave from its event loop, so a loop that stalls for a
// Down interval makes peers take this node's IPs. Stalls are measured (a sampling timer
// every 50 ms, read once a second), logged and counted, so a flap can be told from a
// network fault.

/** Coarse on purpose: the limit is half an interval (50 ms by default), and every sample wakes the loop. */
const SAMPLE_MS = 50;
const READ_MS = 1_000;

export class StallWatch {
  private readonly delay = monitorEventLoopDelay({ resolution: SAMPLE_MS });
  private timer?: NodeJS.Timeout;

  /** `onStall(ms)` for each second in which the loop was late by more than `limitMs()`. */
  start(limitMs: () => number, onStall: (ms: number) => void): void {
    this.delay.enable();
    this.timer = setInterval(() => {
      const worstMs = this.delay.max / 1e6 - SAMPLE_MS;
      this.delay.reset();
      if (worstMs > limitMs()) onStall(Math.round(worstMs));
    }, READ_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.delay.disable();
  }
}
