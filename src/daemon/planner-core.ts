import type { ClusterKeys } from '../config/key.js';
import type { Config } from '../config/model.js';
import { hostFacts } from '../dataplane/facts.js';
import { plan, type DesiredState } from '../plan/desired.js';
import { readReload, reloadSummary, type ReloadCandidate } from './reload.js';

// What the planner does, wherever it runs (inline, or on its thread: planner.ts):
// hold the config, read and validate new ones, and plan.

export interface PlannerState {
  readonly config: Config;
  readonly node: string;
  /** Mark index of each floating IP, as last planned: a reload keeps them (see HostFacts.indexes). */
  readonly indexes: ReadonlyMap<string, number>;
}

export type PlannerRequest =
  | { readonly op: 'load'; readonly file: string; readonly keys: readonly Uint8Array[] }
  /** Mark indexes an earlier daemon used (from the state file): IPs that stay keep them. */
  | { readonly op: 'indexes'; readonly indexes: readonly (readonly [string, number])[] }
  | {
      readonly op: 'plan';
      /** The digest of the config the owners were elected with. */
      readonly digest: string;
      readonly owners: readonly (readonly [string, string])[];
      /** The fingerprint of the applied plan: a plan equal to it comes back without its desired state. */
      readonly unless: string;
    };

export type LoadResult = ReloadCandidate & { readonly summary?: Record<string, string[]> };

export interface PlanResult {
  readonly fingerprint: string;
  /** Absent when the plan equals the applied one (`unless`). */
  readonly desired?: DesiredState;
}

/** Everything a reconcile would change: equal fingerprints need no reconcile. */
const fingerprint = (d: DesiredState): string => JSON.stringify([d.nft, d.rules, d.routes, d.macvlans, d.sysctls]);

export class PlannerCore {
  private config: Config;
  private readonly node: string;
  private indexes: ReadonlyMap<string, number>;
  /** A validated config read by `load`: it becomes the config once a plan asks for it by digest. */
  private candidate?: Config;

  constructor(state: PlannerState) {
    this.config = state.config;
    this.node = state.node;
    this.indexes = state.indexes;
  }

  state(): PlannerState {
    return { config: this.config, node: this.node, indexes: this.indexes };
  }

  handle(req: PlannerRequest): LoadResult | PlanResult | undefined {
    switch (req.op) {
      case 'load':
        // Keys that crossed a thread arrive as bytes: Buffers again.
        return this.load(
          req.file,
          req.keys.map((k) => Buffer.from(k)),
        );
      case 'indexes':
        this.indexes = new Map(req.indexes);
        return undefined;
      case 'plan':
        return this.plan(req);
    }
  }

  private load(file: string, hmacKey: ClusterKeys): LoadResult {
    const r = readReload(file, this.node, { digest: this.config.digest, hmacKey });
    this.candidate = r.ok && !r.unchanged ? r.config : undefined;
    return r.ok && !r.unchanged ? { ...r, summary: reloadSummary(this.config, r.config) } : r;
  }

  private plan(req: Extract<PlannerRequest, { op: 'plan' }>): PlanResult {
    // The daemon decided with the config of this digest: a reload it has taken on.
    if (this.candidate?.digest === req.digest) [this.config, this.candidate] = [this.candidate, undefined];
    if (this.config.digest !== req.digest)
      throw new Error(`no config with digest ${req.digest.slice(0, 12)} to plan with`);
    const facts = { ...hostFacts(this.config), indexes: this.indexes };
    const desired = plan(this.config, this.node, new Map(req.owners), facts);
    this.indexes = new Map(desired.egress.map((e) => [e.ip, e.index]));
    const print = fingerprint(desired);
    return print === req.unless ? { fingerprint: print } : { fingerprint: print, desired };
  }
}
