import { statSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { ClusterKeys } from '../config/key.js';
import type { LoadResult as LoadedConfig } from '../config/load.js';
import type { Config } from '../config/model.js';
import type { ActualTable } from '../dataplane/nft.js';
import type { NftChange } from '../dataplane/nftdiff.js';
import { startedPriority } from '../dataplane/priority.js';
import { readConfigApart } from './config-reader.js';
import {
  PlannerCore,
  type LoadResult,
  type PlannerRequest,
  type PlannerState,
  type PlanResult,
} from './planner-core.js';

// Reading, validating and planning a config of 100,000 CIDRs takes seconds, longer than a
// node may go without sending a heartbeat; then the planner runs on a thread of its own
// (planner-worker.ts) and the daemon's loop only waits for answers. A thread costs about
// 20 MB, so an ordinary config is planned inline, where it takes a millisecond.

/** A config this big (CIDRs of policies and workloads), or a file this big, is planned on the thread. */
export const THREAD_CIDRS = 5_000;
export const THREAD_FILE_BYTES = 64 * 1024;

/** What the planner's thread starts from: the planner's state, and the priority to plan at. */
export interface PlannerWorkerData {
  readonly state: PlannerState;
  readonly nice: number | undefined;
}

export type PlannerReply = { readonly id: number } & (
  | { readonly ok: true; readonly result: LoadResult | PlanResult | NftChange | undefined }
  | { readonly ok: false; readonly error: string }
);

const cidrCount = (c: Config): number =>
  c.policies.reduce(
    (n, p) =>
      n +
      p.destinations.length +
      p.excludedDestinations.length +
      p.sources.reduce((m, s) => m + (s.kind === 'cidrs' ? s.cidrs.length : 0), 0),
    c.workloads.reduce((n, w) => n + w.cidrs.length, 0),
  );

const fileSize = (file: string): number => {
  try {
    return statSync(file).size;
  } catch {
    return 0; // the load reports it
  }
};

export class Planner {
  private inline?: PlannerCore;
  private worker?: Worker;
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve: (v: LoadResult | PlanResult | NftChange | undefined) => void; reject: (e: Error) => void }
  >();
  private closing = false;

  /** `onFailure`: the thread died (it never should); the daemon cannot plan any more. */
  constructor(
    config: Config,
    node: string,
    private readonly onFailure: (e: Error) => void,
    /** How an inline planner has a file read (config-reader.ts; replaceable in tests). */
    private readonly read: (file: string) => Promise<LoadedConfig> = readConfigApart,
  ) {
    this.inline = new PlannerCore({ configs: [config], node, indexes: new Map() });
    if (cidrCount(config) >= THREAD_CIDRS) this.moveToThread();
  }

  /** Where it plans now. */
  get where(): 'inline' | 'thread' {
    return this.worker ? 'thread' : 'inline';
  }

  /** Once on its thread, the planner stays there: a big config tends to come back. */
  private moveToThread(): void {
    if (!this.inline) return;
    const worker = new Worker(new URL('./planner-worker.js', import.meta.url), {
      workerData: { state: this.inline.state(), nice: startedPriority() } satisfies PlannerWorkerData,
    });
    this.inline = undefined;
    this.worker = worker;
    worker.on('message', (reply: PlannerReply) => {
      const w = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      if (reply.ok) w?.resolve(reply.result);
      else w?.reject(new Error(reply.error));
    });
    const fail = (e: Error) => {
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
      if (!this.closing) this.onFailure(e);
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the planner thread exited (${code})`)));
  }

  private ask(req: PlannerRequest): Promise<LoadResult | PlanResult | NftChange | undefined> {
    const inline = this.inline;
    if (inline) return new Promise((resolve) => resolve(inline.handle(req)));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker!.postMessage({ ...req, id });
    });
  }

  /** Reads and validates `file` against the config the daemon runs (`current`); plans go on with theirs until one names the new digest. */
  async load(file: string, keys: ClusterKeys, current: string): Promise<LoadResult> {
    if (fileSize(file) >= THREAD_FILE_BYTES) this.moveToThread();
    if (!this.inline) return this.ask({ op: 'load', file, keys, current }) as Promise<LoadResult>;
    let loaded: LoadedConfig;
    try {
      loaded = await this.read(file);
    } catch (e) {
      // The reader could not run (no memory to fork, say): a failed reload, not a daemon's end.
      return { ok: false, errors: [`${file}: error: ${(e as Error).message}`], warnings: [] };
    }
    // The thread may have been started meanwhile (a plan needs the configs it holds).
    if (!this.inline) return this.ask({ op: 'load', file, keys, current }) as Promise<LoadResult>;
    return this.inline.take(loaded, file, keys, current);
  }

  /** Mark indexes an earlier daemon used on this host: IPs that stay keep them (HostFacts.indexes). */
  async keepIndexes(indexes: ReadonlyMap<string, number>): Promise<void> {
    await this.ask({ op: 'indexes', indexes: [...indexes] });
  }

  /** This node's desired state under the config `digest` for `owners`, unless it equals the applied plan `unless`. */
  plan(digest: string, owners: ReadonlyMap<string, string>, unless: string): Promise<PlanResult> {
    return this.ask({ op: 'plan', digest, owners: [...owners], unless }) as Promise<PlanResult>;
  }

  /** How `have`, our table as the kernel has it, differs from the plan `fingerprint` (the last that came back with its desired state). */
  change(fingerprint: string, have: ActualTable): Promise<NftChange> {
    return this.ask({ op: 'change', fingerprint, have }) as Promise<NftChange>;
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.worker?.terminate();
  }
}
