import netlink from './netlink-lib.js';
import { insertAttributes, type SyncedEntry } from './conntrack-entry.js';
import { ctType, IPCTNL_MSG_CT_NEW, nfgenmsg, NLM_F, NLMSG_ERROR, nlmsg } from './ctnetlink.js';

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
  const existing: SyncedEntry[] = [];
  if (!entries.length) return { inserted, existing, failed };
  const sock = new netlink.RawNetlinkSocket(netlink.Protocol.NETFILTER, {
    recvBufferSize: 1 << 20,
    sendBufferSize: 1 << 20,
  });
  // Each chunk's answers: errno by sequence number; `done` when the last one's came.
  let answers = new Map<number, number>();
  let last = -1;
  let done: (() => void) | undefined;
  sock.on('error', (e) => {
    error ??= `socket: ${e.message}`;
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
      error ??= 'an answer could not be parsed';
    }
  });
  const header = nfgenmsg();
  let seq = Math.floor(Math.random() * 0x7fffffff);
  try {
    for (let i = 0; i < entries.length; i += CHUNK) {
      const chunk = entries.slice(i, i + CHUNK);
      const first = seq;
      answers = new Map();
      last = first + chunk.length - 1;
      const datagram = Buffer.concat(
        chunk.map((e, j) =>
          nlmsg(
            ctType(IPCTNL_MSG_CT_NEW),
            NLM_F.REQUEST | NLM_F.CREATE | NLM_F.EXCL | (j === chunk.length - 1 ? NLM_F.ACK : 0),
            first + j,
            Buffer.concat([header, insertAttributes(e)]),
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
            error ??= `send: ${e.message}`;
            done?.();
          }
        });
      });
      done = undefined;
      if (!answered) error ??= 'the kernel did not answer in time';
      chunk.forEach((e, j) => {
        const errno = answers.get(first + j) ?? 0;
        if (!answered && !answers.has(first + j)) failed++;
        else if (errno === 0) inserted++;
        else if (errno === EEXIST) existing.push(e);
        else {
          failed++;
          error ??= `errno ${errno}`;
        }
      });
      await yieldToLoop();
    }
  } finally {
    sock.close();
  }
  return { inserted, existing, failed, ...(error ? { error } : {}) };
}
