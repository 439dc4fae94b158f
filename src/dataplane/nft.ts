import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import netlink from './netlink-lib.js';
import { NFT_FAMILY, NFT_TABLE } from '../plan/naming.js';
import type { NftSetSpec } from '../plan/nft.js';
import { attr } from './netlink.js';
import { eachAttribute, streamDump } from './netlink-dump.js';
import { awaitCommit, type CommitWait } from './nft-commit.js';
import { lowerStarted } from './priority.js';

const exec = promisify(execFile);

export class NftError extends Error {
  constructor(
    readonly command: string,
    readonly stderr: string,
  ) {
    super(`${command} failed: ${stderr.trim().split('\n').slice(0, 12).join('\n')}`);
  }
}

export interface ActualChain {
  readonly hook?: { type: string; hook: string; prio: number; policy: string };
  /** The digest comments of its rules, in order ("" for a rule without one). */
  readonly rules: readonly string[];
}

export interface ActualTable {
  readonly exists: boolean;
  readonly chains: ReadonlyMap<string, ActualChain>;
  /** Sets, maps and named counters, by name. */
  readonly sets: ReadonlyMap<string, NftSetSpec['kind']>;
}

const NFT = process.env['EGRESS_NATD_NFT'] ?? 'nft';

/** nft's output; with `commit`, as soon as its transaction commits, not when it exits (nft-commit.ts). */
async function nft(args: string[], commit?: CommitWait): Promise<string> {
  try {
    const run = exec(NFT, args, { maxBuffer: 512 * 1024 * 1024 });
    lowerStarted(run.child.pid);
    if (!commit) return (await run).stdout;
    // Once committed, its exit (and any error it still reports) can no longer undo it.
    run.catch(() => undefined);
    return await Promise.race([run.then((r) => r.stdout), commit.of(run.child.pid).then(() => '')]);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT')
      throw new NftError(`${NFT} ${args.join(' ')}`, 'nft is not installed (apt-get install nftables)');
    throw new NftError(`${NFT} ${args.join(' ')}`, err.stderr || err.message);
  }
}

type NftJson = { nftables: Record<string, Record<string, unknown>>[] };

const noTable = (e: unknown): boolean => e instanceof NftError && /No such file or directory/.test(e.stderr);

/** Our table without set elements (`-t`): enough to diff, and fast with 100k elements. */
export async function readTable(): Promise<ActualTable> {
  let out: string;
  try {
    out = await nft(['-j', '-t', 'list', 'table', NFT_FAMILY, NFT_TABLE]);
  } catch (e) {
    if (noTable(e)) return { exists: false, chains: new Map(), sets: new Map() };
    throw e;
  }
  const items = (JSON.parse(out) as NftJson).nftables;
  const chains = new Map<string, { hook?: ActualChain['hook']; rules: string[] }>();
  const sets = new Map<string, NftSetSpec['kind']>();
  for (const item of items) {
    if (item['chain']) {
      const c = item['chain'] as { name: string; type?: string; hook?: string; prio?: number; policy?: string };
      chains.set(c.name, {
        ...(c.hook ? { hook: { type: c.type!, hook: c.hook, prio: c.prio!, policy: c.policy! } } : {}),
        rules: [],
      });
    } else if (item['rule']) {
      const r = item['rule'] as { chain: string; comment?: string };
      chains.get(r.chain)?.rules.push(r.comment ?? '');
    } else if (item['set']) sets.set((item['set'] as { name: string }).name, 'set');
    else if (item['map']) sets.set((item['map'] as { name: string }).name, 'map');
    else if (item['counter']) sets.set((item['counter'] as { name: string }).name, 'counter');
  }
  return { exists: true, chains, sets };
}

// Counters are read over netlink, not with the nft CLI: nft 1.0.6 loads its whole cache
// (every set element) for any command, 0.5 s of CPU with 100k elements, on every scrape.
const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWOBJ = (NFNL_SUBSYS_NFTABLES << 8) | 18;
const NFT_MSG_GETOBJ = (NFNL_SUBSYS_NFTABLES << 8) | 19;
const NFPROTO_INET = 1;
const NFTA_OBJ_TABLE = 1;
const NFTA_OBJ_NAME = 2;
const NFTA_OBJ_TYPE = 3;
const NFTA_OBJ_DATA = 4;
const NFT_OBJECT_COUNTER = 1;
const NFTA_COUNTER_BYTES = 1;
const NFTA_COUNTER_PACKETS = 2;

export interface CounterValue {
  readonly packets: number;
  readonly bytes: number;
}

/**
 * Packets and bytes counted by each named counter of our table (a netlink dump of the
 * table's counters only: about a millisecond whatever the size of the ruleset); none without the table.
 */
export async function readCounters(): Promise<Map<string, CounterValue>> {
  const type = Buffer.alloc(4);
  type.writeUInt32BE(NFT_OBJECT_COUNTER);
  const request = {
    what: `the counters of table ${NFT_FAMILY} ${NFT_TABLE}`,
    protocol: netlink.Protocol.NETFILTER,
    type: NFT_MSG_GETOBJ,
    payload: Buffer.concat([
      Buffer.from([NFPROTO_INET, 0, 0, 0]), // nfgenmsg: family, version, resource id
      attr(NFTA_OBJ_TABLE, Buffer.from(`${NFT_TABLE}\0`)),
      attr(NFTA_OBJ_TYPE, type),
    ]),
    answer: NFT_MSG_NEWOBJ,
  };
  const counters = new Map<string, CounterValue>();
  const u64 = (b: Buffer, from: number, to: number) => (to - from >= 8 ? Number(b.readBigUInt64BE(from)) : undefined);
  try {
    await streamDump(request, (b) => {
      let name: string | undefined;
      let packets: number | undefined;
      let bytes = 0;
      eachAttribute(b, 4, b.length, (t, from, to) => {
        if (t === NFTA_OBJ_NAME) {
          const nul = b.indexOf(0, from);
          name = b.toString('utf8', from, nul >= from && nul < to ? nul : to);
        }
        if (t === NFTA_OBJ_DATA)
          eachAttribute(b, from, to, (c, f, e) => {
            if (c === NFTA_COUNTER_PACKETS) packets = u64(b, f, e);
            if (c === NFTA_COUNTER_BYTES) bytes = u64(b, f, e) ?? 0;
          });
      });
      if (name !== undefined && packets !== undefined) counters.set(name, { packets, bytes });
    });
  } catch (e) {
    throw new NftError(`netlink dump of the counters of table ${NFT_FAMILY} ${NFT_TABLE}`, (e as Error).message);
  }
  return counters;
}

/**
 * Above this size a transaction is told done by nft's exit only: listening for its commit
 * would have the kernel build an event per set element for our socket too.
 */
export const HEARD_COMMIT_BYTES = 64 * 1024;

/**
 * Runs `commands` as one nft transaction (the kernel applies all of it or none of it);
 * resolves once it committed (nft may still be exiting).
 */
export async function runTransaction(commands: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'egress-natd-'));
  const file = join(dir, 'transaction.nft');
  const commit = commands.length <= HEARD_COMMIT_BYTES ? awaitCommit() : undefined;
  try {
    // nft cannot read Node's stdin (a socket), so the batch goes through a file (read before it commits).
    await writeFile(file, commands, { mode: 0o600 });
    await nft(['-f', file], commit);
  } finally {
    commit?.end();
    await rm(dir, { recursive: true, force: true });
  }
}

export async function deleteTable(): Promise<boolean> {
  const t = await readTable();
  if (!t.exists) return false;
  await runTransaction(`delete table ${NFT_FAMILY} ${NFT_TABLE}\n`);
  return true;
}
