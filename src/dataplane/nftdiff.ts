import type { ActualTable } from './nft.js';
import {
  addChainCommand,
  addRuleCommand,
  addSetCommand,
  ruleComment,
  TABLE_REF,
  type NftChainSpec,
  type NftTableSpec,
} from '../plan/nft.js';

// The difference between the planned table and the kernel's, as two nft transactions.
// Sets are content-addressed (immutable), so they are only ever added or deleted;
// chains keep their names and have their rules replaced when the rules differ.
//
// Why two: a set made in the same transaction as the rule that starts using it misses
// lookups for a moment after the commit (measured on Linux 6.18: about 1.5 packets per
// swap of a flow of 120,000 packets/s). A source map missed is a packet left unmarked, routed
// by the main table with the workload's own address. So the new objects (sets, counters,
// regular chains) come first, in a transaction of their own that nothing refers to yet,
// and the switch to them (the rules that name them, and what goes) in a second one.

export interface NftDiff {
  /** The first transaction: new objects that nothing refers to yet (empty when there are none). */
  readonly staged: string[];
  /** The second: the rules that switch to them, and what goes; empty when nothing differs. */
  readonly commands: string[];
  readonly summary: string[];
}

/** The two transactions as text ('' when empty): what reconcile runs, and what crosses from the planner's thread in one piece. */
export interface NftChange {
  readonly staged: string;
  readonly commands: string;
  /** One line per change; a big change in a few (see `shortSummary`). */
  readonly summary: readonly string[];
}

/** Beyond this many lines, the summary says how many of each kind: thousands of log lines held the loop for 180 ms. */
export const SUMMARY_LINES = 20;

/** "add map d_ab (50 elements)" × 2,000 → "add 2000 maps (100000 elements)". */
export function shortSummary(summary: readonly string[]): string[] {
  if (summary.length <= SUMMARY_LINES) return [...summary];
  const kinds = new Map<string, { verb: string; kind: string; count: number; elements: number }>();
  const verbatim: string[] = [];
  for (const line of summary) {
    const [verb, kind] = line.split(' ', 2) as [string, string];
    if (kind === 'table') {
      verbatim.push(line);
      continue;
    }
    const k = kinds.get(`${verb} ${kind}`) ?? { verb, kind, count: 0, elements: 0 };
    k.count++;
    k.elements += Number(/\((\d+) elements\)$/.exec(line)?.[1] ?? 0);
    kinds.set(`${verb} ${kind}`, k);
  }
  const counted = [...kinds.values()].map(
    (k) => `${k.verb} ${k.count} ${k.kind}${k.count === 1 ? '' : 's'}${k.elements ? ` (${k.elements} elements)` : ''}`,
  );
  return [...verbatim, ...counted];
}

/** `short`: the summary in a few lines when it is long (the daemon's log; `apply` prints every line). */
export function nftChange(want: NftTableSpec, have: ActualTable, short = false): NftChange {
  const d = diffTable(want, have);
  const text = (lines: readonly string[]) => (lines.length ? `${lines.join('\n')}\n` : '');
  return { staged: text(d.staged), commands: text(d.commands), summary: short ? shortSummary(d.summary) : d.summary };
}

const sameHook = (
  want: NftChainSpec,
  have: ActualTable['chains'] extends ReadonlyMap<string, infer C> ? C : never,
): boolean => {
  if (!want.hook || !have.hook) return !want.hook && !have.hook;
  const h = have.hook;
  return (
    h.type === want.hook.type && h.hook === want.hook.hook && h.prio === want.hook.prio && h.policy === want.hook.policy
  );
};

export function diffTable(want: NftTableSpec, have: ActualTable): NftDiff {
  const staged: string[] = [];
  const commands: string[] = [];
  const summary: string[] = [];
  if (!have.exists) {
    staged.push(`add table ${TABLE_REF}`);
    summary.push(`create table ${TABLE_REF}`);
  }
  const wantChains = new Map(want.chains.map((c) => [c.name, c]));
  const wantSets = new Set(want.sets.map((s) => s.name));

  // A chain whose hook changed cannot be altered in place: it is deleted and made anew.
  const rebuilt = want.chains.filter((c) => {
    const h = have.chains.get(c.name);
    return h && !sameHook(c, h);
  });
  for (const c of rebuilt) commands.push(`flush chain ${TABLE_REF} ${c.name}`, `delete chain ${TABLE_REF} ${c.name}`);
  const missing = want.chains.filter((c) => !have.chains.has(c.name) || rebuilt.includes(c));
  // A base chain sees packets as soon as it exists: it is made in the switch.
  const isNew = (c: NftChainSpec) => missing.includes(c) && !c.hook;
  for (const c of missing) (isNew(c) ? staged : commands).push(addChainCommand(c));
  for (const s of want.sets.filter((s) => !have.sets.has(s.name))) {
    staged.push(addSetCommand(s));
    summary.push(`add ${s.kind} ${s.name} (${s.elements.length} elements)`);
  }
  for (const c of want.chains) {
    const current = missing.includes(c) ? undefined : have.chains.get(c.name);
    const digests = c.rules.map(ruleComment);
    if (current && current.rules.length === digests.length && current.rules.every((d, i) => d === digests[i])) continue;
    const into = isNew(c) ? staged : commands;
    if (current) into.push(`flush chain ${TABLE_REF} ${c.name}`);
    for (const r of c.rules) into.push(addRuleCommand(c.name, r));
    summary.push(`${current ? 'replace' : 'add'} chain ${c.name} (${c.rules.length} rules)`);
  }
  // Stale objects go last, once nothing that stays refers to them. Stale chains and
  // sets refer to each other (goto, vmap @set): empty the chains, drop the sets, then
  // drop the chains.
  const staleChains = [...have.chains.keys()].filter((name) => !wantChains.has(name));
  for (const name of staleChains) commands.push(`flush chain ${TABLE_REF} ${name}`);
  // Counters last: a map that names a counter must go before it.
  const stale = [...have.sets].sort(([, a], [, b]) => Number(a === 'counter') - Number(b === 'counter'));
  for (const [name, kind] of stale) {
    if (wantSets.has(name)) continue;
    commands.push(`delete ${kind} ${TABLE_REF} ${name}`);
    summary.push(`delete ${kind} ${name}`);
  }
  for (const name of staleChains) {
    commands.push(`delete chain ${TABLE_REF} ${name}`);
    summary.push(`delete chain ${name}`);
  }
  return { staged, commands, summary };
}
