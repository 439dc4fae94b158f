import { parentPort, workerData } from 'node:worker_threads';
import { PlannerCore, type PlannerRequest, type PlannerState } from './planner-core.js';
import type { PlannerReply } from './planner.js';

// The planner's own thread (see planner.ts): requests in order, one answer each.

const core = new PlannerCore(workerData as PlannerState);

parentPort!.on('message', (req: PlannerRequest & { readonly id: number }) => {
  let reply: PlannerReply;
  try {
    reply = { id: req.id, ok: true, result: core.handle(req) };
  } catch (e) {
    reply = { id: req.id, ok: false, error: (e as Error).message };
  }
  parentPort!.postMessage(reply);
});
