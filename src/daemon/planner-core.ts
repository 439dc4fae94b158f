import type { ClusterKeys } from '../config/key.js';
import type { Config } from '../config/model.js';
import { hostFacts } from '../dataplane/facts.js';
import type { ActualTable } from '../dataplane/nft.js';
import { nftChange, type NftChange } from '../dataplane/nftdiff.js';
import type { HostPlan } from '../dataplane/reconcile.js';
import { plan, type DesiredState } from '../plan/desired.js';
import type { LoadResult as LoadedConfig } from '../config/load.js';
import { judgeReload, reloadSummary, type ReloadCandidate } from './reload.js';

// What the planner does, wherever it runs (inline, or on its thread: planner.ts):
// hold the config, take new ones, and plan. It reads and validates them with `read`
// (on its thread), or is handed them read (inline: the daemon's loop never loads the
// parsers, see config-reader.ts).

export interface PlannerState {
  /** Every config the daemon may still plan with, oldest first: the one it planned with last, and any loaded since. */
  readonly configs: readonly Config[];
  readonly node: string;
  /** Mark index of each floating IP, as last planned: a reload keeps them (see HostFacts.indexes). */
  readonly indexes: ReadonlyMap<string, number>;
}

export type PlannerRequest =
  | {
      readonly op: 'load';
      readonly file: string;
      readonly keys: readonly Uint8Array[];
      /** The digest of the config the daemon runs: "unchanged" means equal to it. */
      readonly current: string;
    }
  /** Mark indexes an earlier daemon used (from the state file): IPs that stay keep them. */
  | { readonly op: 'indexes'; readonly indexes: readonly (readonly [string, number])[] }
  /** How our table as the kernel has it (`have`) differs from the last plan, which must be `fingerprint`. */
  | { readonly op: 'change'; readonly fingerprint: string; readonly have: ActualTable }
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
  readonly desired?: HostPlan;
}

/** Everything a reconcile would change: equal fingerprints need no reconcile. */
const fingerprint = (d: DesiredState): string => JSON.stringify([d.nft, d.rules, d.routes, d.macvlans, d.sysctls]);

export class PlannerCore {
  private readonly node: string;
  private indexes: ReadonlyMap<string, number>;
  /**
   * Configs by digest, in the order they were loaded: the one planned with last, then any
   * validated since. A reload the daemon took while it did not plan (still listening) is
   * here until a plan names it; a reload it refused later (say, its socket could not open)
   * does not push out the config it runs.
   */
  private readonly configs = new Map<string, Config>();
  /** The nft table of the last plan that came back with its desired state. */
  private planned?: { readonly fingerprint: string; readonly nft: DesiredState['nft'] };

  constructor(
    state: PlannerState,
    /** loadConfig, where this core may read files itself (its own thread). */
    private readonly read?: (file: string) => LoadedConfig,
  ) {
    for (const c of state.configs) this.configs.set(c.digest, c);
    this.node = state.node;
    this.indexes = state.indexes;
  }

  state(): PlannerState {
    return { configs: [...this.configs.values()], node: this.node, indexes: this.indexes };
  }

  handle(req: PlannerRequest): LoadResult | PlanResult | NftChange | undefined {
    switch (req.op) {
      case 'load':
        if (!this.read) throw new Error('this planner reads no files: take() what was read elsewhere');
        // Keys that crossed a thread arrive as bytes: Buffers again.
        return this.take(
          this.read(req.file),
          req.file,
          req.keys.map((k) => Buffer.from(k)),
          req.current,
        );
      case 'indexes':
        this.indexes = new Map(req.indexes);
        return undefined;
      case 'plan':
        return this.plan(req);
      case 'change':
        return this.change(req);
    }
  }

  private change(req: Extract<PlannerRequest, { op: 'change' }>): NftChange {
    if (this.planned?.fingerprint !== req.fingerprint)
      throw new Error(`the plan ${req.fingerprint.slice(0, 12)} is not the last one made: plan again`);
    const change = nftChange(this.planned.nft, req.have, true);
    this.planned = undefined; // 100,000 elements: not kept once rendered
    return change;
  }

  /** A new config, read and validated from `file`, judged against the one the daemon runs (`current`). */
  take(loaded: LoadedConfig, file: string, hmacKey: ClusterKeys, current: string): LoadResult {
    const r = judgeReload(loaded, file, this.node, { digest: current, hmacKey });
    if (!r.ok || r.unchanged) return r;
    const running = this.configs.get(current);
    this.configs.delete(r.config.digest); // a config loaded again is the newest
    this.configs.set(r.config.digest, r.config);
    return running ? { ...r, summary: reloadSummary(running, r.config) } : r;
  }

  private plan(req: Extract<PlannerRequest, { op: 'plan' }>): PlanResult {
    const config = this.configs.get(req.digest);
    if (!config) throw new Error(`no config with digest ${req.digest.slice(0, 12)} to plan with`);
    // The daemon runs this config now: the ones loaded before it are gone for good.
    for (const digest of this.configs.keys()) {
      if (digest === req.digest) break;
      this.configs.delete(digest);
    }
    const facts = { ...hostFacts(config), indexes: this.indexes };
    const desired = plan(config, this.node, new Map(req.owners), facts);
    this.indexes = new Map(desired.egress.map((e) => [e.ip, e.index]));
    const print = fingerprint(desired);
    if (print === req.unless) return { fingerprint: print };
    // The table stays here: rendering its sets as text is for this thread, not the daemon's loop.
    const { nft, ...host } = desired;
    this.planned = { fingerprint: print, nft };
    return { fingerprint: print, desired: host };
  }
}
