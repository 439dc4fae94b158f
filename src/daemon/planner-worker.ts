import { parentPort, workerData } from 'node:worker_threads';
import { loadConfig } from '../config/load.js';
import { lowerThisThread } from '../dataplane/priority.js';
import { PlannerCore, type PlannerRequest } from './planner-core.js';
import type { PlannerReply, PlannerWorkerData } from './planner.js';

// The planner's own thread (see planner.ts): requests in order, one answer each. It plans
// at the process's own priority, below the loop's (priority.ts).

const data = workerData as PlannerWorkerData;
lowerThisThread(data.nice);
const core = new PlannerCore(data.state, loadConfig);

parentPort!.on('message', (req: PlannerRequest & { readonly id: number }) => {
  let reply: PlannerReply;
  try {
    reply = { id: req.id, ok: true, result: core.handle(req) };
  } catch (e) {
    reply = { id: req.id, ok: false, error: (e as Error).message };
  }
  parentPort!.postMessage(reply);
});
