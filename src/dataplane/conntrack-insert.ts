import { insertAttributes, type SyncedEntry } from './conntrack-entry.js';
import { ctType, IPCTNL_MSG_CT_NEW, nfgenmsg, openCtnetlink } from './ctnetlink.js';

// Installs synced connections in this host's conntrack table (what `conntrack -I` does),
// many requests in flight at once, yielding to the event loop between batches so that
// heartbeats keep going while 100,000 entries go in.

const NLM_F_CREATE_EXCL = 0x600;
const BATCH = 256;

export interface InsertResult {
  readonly inserted: number;
  /** An entry with the same tuple was already there (this host's own): left as it is. */
  readonly existing: SyncedEntry[];
  readonly failed: number;
  /** The first failure's reason, for the log. */
  readonly error?: string;
}

const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

export async function insertEntries(entries: readonly SyncedEntry[]): Promise<InsertResult> {
  let inserted = 0;
  let failed = 0;
  let error: string | undefined;
  const sock = openCtnetlink((e) => (error ??= `socket: ${e.message}`));
  const existing: SyncedEntry[] = [];
  const header = nfgenmsg();
  try {
    for (let i = 0; i < entries.length; i += BATCH) {
      await Promise.all(
        entries.slice(i, i + BATCH).map((e) =>
          sock
            .request(ctType(IPCTNL_MSG_CT_NEW), [header, insertAttributes(e)], {
              flags: NLM_F_CREATE_EXCL,
              timeout: 2000,
            })
            .then(
              () => inserted++,
              (err: Error) => {
                if (/EEXIST/.test(err.message)) existing.push(e);
                else {
                  failed++;
                  error ??= err.message;
                }
              },
            ),
        ),
      );
      if (i + BATCH < entries.length) await yieldToLoop();
    }
  } finally {
    sock.socket.close();
  }
  return { inserted, existing, failed, ...(error ? { error } : {}) };
}
