import { formatRange, type Range } from '../util/ip.js';
import type { DestinationRange } from './classify.js';
import { NFT_FAMILY, NFT_TABLE, digest, policyChain } from './naming.js';

// The nft part of a plan, in nft's own syntax. nft 1.0.6 (Debian 12) cannot express
// `socket cgroupv2` in JSON input (its JSON parser knows only transparent/mark/wildcard
// socket keys), so changes are written in nft's text syntax as one atomic transaction;
// state is read back with `nft -j`.

/**
 * A named object of the table that never changes in place: it is only added or deleted.
 * Sets and maps are content-addressed (the name carries a digest of the declaration and
 * elements); a named counter has a fixed name and no content, so it keeps counting
 * across changes of the plan.
 */
export interface NftSetSpec {
  readonly name: string;
  readonly kind: 'set' | 'map' | 'counter';
  /** e.g. "type ipv4_addr : verdict; flags interval;"; empty for a counter. */
  readonly declaration: string;
  readonly elements: readonly string[];
}

export interface ChainHook {
  readonly type: 'filter' | 'route' | 'nat';
  readonly hook: 'prerouting' | 'output' | 'postrouting';
  /** The number nft reports, and the name written in files. */
  readonly prio: number;
  readonly prioText: string;
  readonly policy: 'accept';
}

export const hookText = (h: ChainHook): string =>
  `type ${h.type} hook ${h.hook} priority ${h.prioText}; policy ${h.policy};`;

export interface NftChainSpec {
  readonly name: string;
  readonly hook?: ChainHook;
  /** Rule bodies without comments; each is installed with its digest as comment. */
  readonly rules: readonly string[];
}

export interface NftTableSpec {
  readonly sets: readonly NftSetSpec[];
  readonly chains: readonly NftChainSpec[];
}

export const TABLE_REF = `${NFT_FAMILY} ${NFT_TABLE}`;

export function makeSet(
  prefix: string,
  kind: 'set' | 'map',
  declaration: string,
  elements: readonly string[],
): NftSetSpec {
  const name = `${prefix}_${digest(`${declaration}\n${elements.join('\n')}`)}`;
  return { name, kind, declaration, elements };
}

export const makeCounter = (name: string): NftSetSpec => ({ name, kind: 'counter', declaration: '', elements: [] });

/** The destination lookup of one source class: each range goes to its policy's chain (which counts it, then goes to its egress chain). */
export const destinationMap = (destinations: readonly DestinationRange[]): NftSetSpec =>
  makeSet(
    'd',
    'map',
    'type ipv4_addr : verdict; flags interval;',
    destinations.map((d) => `${formatRange(d.range)} : goto ${policyChain(d.policy)}`),
  );

/** A source lookup: each range goes to its class chain (`chains`, by class id). */
export const sourceMap = (
  prefix: string,
  sources: readonly { range: Range; cls: number }[],
  chains: readonly string[],
): NftSetSpec =>
  makeSet(
    prefix,
    'map',
    'type ipv4_addr : verdict; flags interval;',
    sources.map((s) => `${formatRange(s.range)} : goto ${chains[s.cls]}`),
  );

export const ruleComment = (rule: string): string => digest(rule, 16);

export function ruleText(rule: string): string {
  return `${rule} comment "${ruleComment(rule)}"`;
}

function setBody(s: NftSetSpec, indent: string): string {
  const elems = s.elements.length
    ? ` elements = {\n${s.elements.map((e) => `${indent}\t\t${e}`).join(',\n')}\n${indent}\t}`
    : '';
  return `{ ${s.declaration}${elems} }`;
}

export const addSetCommand = (s: NftSetSpec): string => `add ${s.kind} ${TABLE_REF} ${s.name} ${setBody(s, '')}`;

export const addChainCommand = (c: NftChainSpec): string =>
  `add chain ${TABLE_REF} ${c.name}${c.hook ? ` { ${hookText(c.hook)} }` : ''}`;

export const addRuleCommand = (chain: string, rule: string): string =>
  `add rule ${TABLE_REF} ${chain} ${ruleText(rule)}`;

/**
 * The whole table as one file that `nft -f` takes: it first creates and deletes the
 * table, so loading it leaves exactly this table whatever was there before.
 */
export function renderTable(t: NftTableSpec): string {
  const lines = [`table ${TABLE_REF} {}`, `delete table ${TABLE_REF}`, `table ${TABLE_REF} {`];
  for (const s of t.sets) lines.push(`\t${s.kind} ${s.name} ${setBody(s, '\t')}`);
  for (const c of t.chains) {
    lines.push(`\tchain ${c.name} {`);
    if (c.hook) lines.push(`\t\t${hookText(c.hook)}`);
    for (const r of c.rules) lines.push(`\t\t${ruleText(r)}`);
    lines.push('\t}');
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}
