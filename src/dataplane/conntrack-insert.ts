import netlink from './netlink-lib.js';
import { insertAttributes, origTupleAttribute, type SyncedEntry } from './conntrack-entry.js';
import { ctType, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, nfgenmsg, NLM_F, NLMSG_ERROR, nlmsg } from './ctnetlink.js';

// Installs synced connections in this host's conntrack table (what `conntrack -I` does).
// It runs before a taken IP is announced, so it must be quick: requests go CHUNK at a
// time in one datagram each (the kernel handles every message of a datagram in turn),
// without an ACK but for the chunk's last one; the kernel answers only the failures.
// A chunk's answers fit the socket's buffer, so no error can overflow it, and the event
// loop gets a turn between chunks.

const EEXIST = 17;
const CHUNK = 256;
const CHUNK_TIMEOUT_MS = 5000;

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

const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

/** The kernel's answer (0 or an errno) to each of `requests`, sent CHUNK to a datagram; undefined: no answer in time. */
async function send(
  type: number,
  flags: number,
  requests: readonly Buffer[],
  note: (error: string) => void,
): Promise<(number | undefined)[]> {
  const sock = new netlink.RawNetlinkSocket(netlink.Protocol.NETFILTER, {
    recvBufferSize: 1 << 20,
    sendBufferSize: 1 << 20,
  });
  // Each chunk's answers: errno by sequence number; `done` when the last one's came.
  let answers = new Map<number, number>();
  let last = -1;
  let done: (() => void) | undefined;
  sock.on('error', (e) => {
    note(`socket: ${e.message}`);
    done?.();
  });
  sock.on('message', (datagram) => {
    try {
      for (const m of netlink.parseMessages(datagram)) {
        if (m.type !== NLMSG_ERROR || m.data.length < 4) continue;
        answers.set(m.seq, -m.data.readInt32LE(0));
        if (m.seq === last) done?.();
      }
    } catch {
      note('an answer could not be parsed');
    }
  });
  const header = nfgenmsg();
  const out: (number | undefined)[] = [];
  let seq = Math.floor(Math.random() * 0x7fffffff);
  try {
    for (let i = 0; i < requests.length; i += CHUNK) {
      const chunk = requests.slice(i, i + CHUNK);
      const first = seq;
      answers = new Map();
      last = first + chunk.length - 1;
      const datagram = Buffer.concat(
        chunk.map((r, j) =>
          nlmsg(
            ctType(type),
            NLM_F.REQUEST | flags | (j === chunk.length - 1 ? NLM_F.ACK : 0),
            first + j,
            Buffer.concat([header, r]),
          ),
        ),
      );
      seq += chunk.length;
      const answered = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), CHUNK_TIMEOUT_MS);
        done = () => {
          clearTimeout(timer);
          resolve(true);
        };
        sock.send([datagram], {}, (e) => {
          if (e) {
            note(`send: ${e.message}`);
            done?.();
          }
        });
      });
      done = undefined;
      if (!answered) note('the kernel did not answer in time');
      chunk.forEach((_, j) => out.push(answered || answers.has(first + j) ? (answers.get(first + j) ?? 0) : undefined));
      await yieldToLoop();
    }
  } finally {
    sock.close();
  }
  return out;
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
  const insert = (of: readonly SyncedEntry[]) => send(IPCTNL_MSG_CT_NEW, create, of.map(insertAttributes), note);
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
  await send(IPCTNL_MSG_CT_DELETE, 0, first.clash.map(origTupleAttribute), note);
  const again = clashing(first.clash, await insert(first.clash));
  return {
    inserted: first.inserted + again.inserted,
    replaced: again.inserted,
    existing: again.clash,
    failed,
    ...(error ? { error } : {}),
  };
}
