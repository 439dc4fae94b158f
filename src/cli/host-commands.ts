import { hostname } from 'node:os';
import { formatDiagnostic, hasErrors, sortDiagnostics } from '../config/diagnostics.js';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/model.js';
import { hostFacts } from '../dataplane/facts.js';
import { missingCgroups, plan, type Owners } from '../plan/desired.js';
import { renderTable } from '../plan/nft.js';
import { formatAddress, parseAddress } from '../util/ip.js';
import { err, InputError, out } from './errors.js';
import { loadedOrExit } from './loaded-or-exit.js';

// The commands that read the config and change this host (or say how they would):
// check, plan, apply, release. Loaded only when one of them runs; what changes the host
// (netlink, nft, the logger) only when apply or release runs: check and plan skip its start-up.

/** Loads and validates; prints every diagnostic; exits 2 on errors. */
export const loadOrExit = (file: string): Config => loadedOrExit(loadConfig(file));

function parseOwners(values: readonly string[]): Owners {
  const owners = new Map<string, string>();
  for (const v of values) {
    const m = /^([^=]+)=(.+)$/.exec(v);
    const ip = m && parseAddress(m[1]!);
    if (!m || !ip?.ok) throw new InputError(`--owner ${v}: expected IP=NODE, e.g. --owner 192.168.1.100=worker1`);
    const text = formatAddress(ip.value);
    if (owners.has(text)) throw new InputError(`--owner ${v}: ${text} already has an owner`);
    owners.set(text, m[2]!);
  }
  return owners;
}

export interface PlanOptions {
  readonly config: string;
  readonly node?: string;
  readonly owner: string[];
}

function planFor(config: Config, opts: PlanOptions) {
  const node = opts.node ?? hostname();
  const facts = hostFacts(config);
  const desired = plan(config, node, parseOwners(opts.owner), facts);
  for (const c of missingCgroups(config, node, facts))
    err(
      `warning: cgroup ${c} does not exist on this host; its traffic is not selected until it does and apply runs again`,
    );
  return desired;
}

async function hostChanges() {
  const [{ pino }, { readTable }, { nftChange }, { park }, { release, reconcile }, { StateStore }] = await Promise.all([
    import('pino'),
    import('../dataplane/nft.js'),
    import('../dataplane/nftdiff.js'),
    import('../dataplane/park.js'),
    import('../dataplane/reconcile.js'),
    import('../dataplane/state.js'),
  ]);
  const log = pino({ base: { svc: 'egress-natd' } }, pino.destination(2));
  return { log, nftChange, park, readTable, release, reconcile, state: (dir?: string) => new StateStore(dir) };
}

export function check(o: { config: string }): void {
  const config = loadOrExit(o.config);
  out(
    `${o.config}: ok (${config.nodes.length} nodes, ${config.gateways.length} gateways, ${config.policies.length} policies)`,
  );
}

export function printPlan(o: PlanOptions & { output: 'nft' | 'json' }): void {
  const desired = planFor(loadOrExit(o.config), o);
  process.stdout.write(o.output === 'nft' ? renderTable(desired.nft) : `${JSON.stringify(desired, null, 2)}\n`);
}

export async function apply(o: PlanOptions & { stateDir?: string; garp: boolean }): Promise<void> {
  const { log, nftChange, readTable, reconcile, state } = await hostChanges();
  // nft lists a table of 100,000 elements about as long as the config takes to load and
  // plan: it does so meanwhile, on the other core (reconcile awaits it, and reports its failure).
  const table = readTable();
  table.catch(() => undefined);
  const { nft, ...desired } = planFor(loadOrExit(o.config), o);
  const started = process.hrtime.bigint();
  const { changes } = await reconcile(desired, (have) => nftChange(nft, have), {
    state: state(o.stateDir),
    log,
    noGarp: !o.garp,
    table,
  });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (changes.length === 0) return out(`no change: node ${desired.node} already matches the plan`);
  // One write, not one per change: an empty host takes some 4,000 of them with a big config.
  out(changes.join('\n'));
  out(
    `applied ${changes.length} change${changes.length === 1 ? '' : 's'} to node ${desired.node} in ${ms.toFixed(0)} ms`,
  );
}

export async function releaseHost(o: {
  stateDir?: string;
  keepSteering?: boolean;
  config: string;
  node?: string;
}): Promise<void> {
  const { log, park, release, state } = await hostChanges();
  const opts = { state: state(o.stateDir), log };
  let config: Config | undefined;
  if (o.keepSteering) {
    const loaded = loadConfig(o.config);
    for (const d of sortDiagnostics(loaded.diagnostics)) err(formatDiagnostic(d));
    if (!hasErrors(loaded.diagnostics)) config = loaded.config;
  }
  const parked = o.keepSteering ? await park(config, o.node ?? hostname(), opts) : undefined;
  const { changes } = parked ?? (await release(opts));
  if (changes.length) out(changes.join('\n'));
  const n = changes.length;
  out(n ? `released: ${n} change${n === 1 ? '' : 's'}` : 'nothing to release');
  if (parked) out(`steering ${parked.steering}`);
}
