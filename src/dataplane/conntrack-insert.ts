import { insertAttributes, origTupleAttribute, type SyncedEntry } from './conntrack-entry.js';
import { IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, NLM_F } from './ctnetlink.js';
import { ctRequests } from './conntrack-requests.js';

// Installs synced connections in this host's conntrack table (what `conntrack -I` does).
// A taken IP waits for it (before its announcement in a handover; after a failover, the
// owner drops what reaches the IP for a connection not in yet), so it must be quick.

const EEXIST = 17;

export interface InsertResult {
  readonly inserted: number;
  /** Entries with the same original tuple that were there already, replaced by the synced ones. */
  readonly replaced: number;
  /** An entry with the same tuple was there again after it was replaced: left as it is. */
  readonly existing: SyncedEntry[];
  readonly failed: number;
  /** The first failure's reason, for the log. */
  readonly error?: string;
}

/**
 * Inserts `entries`. One whose original tuple the kernel tracks already is replaced: the
 * synced entry is the connection as its owner has it now, and what was here is older (a
 * connection this host tracked in an earlier tenure of the IP, say, in TIME_WAIT; the bench
 * lost server-push connections to such leftovers, whose reused client ports matched).
 */
export async function insertEntries(entries: readonly SyncedEntry[]): Promise<InsertResult> {
  let failed = 0;
  let error: string | undefined;
  const note = (e: string) => void (error ??= e);
  const create = NLM_F.CREATE | NLM_F.EXCL;
  const insert = (of: readonly SyncedEntry[]) => ctRequests(IPCTNL_MSG_CT_NEW, create, of.map(insertAttributes), note);
  const clashing = (of: readonly SyncedEntry[], answers: readonly (number | undefined)[]) => {
    let inserted = 0;
    const clash: SyncedEntry[] = [];
    answers.forEach((errno, i) => {
      if (errno === 0) inserted++;
      else if (errno === EEXIST) clash.push(of[i]!);
      else {
        failed++;
        note(errno === undefined ? 'no answer' : `errno ${errno}`);
      }
    });
    return { inserted, clash };
  };
  if (!entries.length) return { inserted: 0, replaced: 0, existing: [], failed };
  const first = clashing(entries, await insert(entries));
  if (!first.clash.length)
    return { inserted: first.inserted, replaced: 0, existing: [], failed, ...(error ? { error } : {}) };
  // ENOENT is fine: the old entry timed out meanwhile.
  await ctRequests(IPCTNL_MSG_CT_DELETE, 0, first.clash.map(origTupleAttribute), note);
  const again = clashing(first.clash, await insert(first.clash));
  return {
    inserted: first.inserted + again.inserted,
    replaced: again.inserted,
    existing: again.clash,
    failed,
    ...(error ? { error } : {}),
  };
}
