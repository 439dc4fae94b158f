import netlink from './netlink-lib.js';
import { ctType, nfgenmsg, NLM_F, NLMSG_ERROR, nlmsg } from './ctnetlink.js';
import { takeSeqs, withNetlinkSocket } from './netlink-pool.js';

// Requests to ctnetlink that answer with an acknowledgement (insert, delete, flush), sent
// quickly: CHUNK to a datagram (the kernel handles every message of a datagram in turn),
// without an ACK but for the chunk's last one, so the kernel answers only the failures. A
// chunk's answers fit the socket's buffer, so no error can overflow it, and the event loop
// gets a turn between chunks. The socket is a pooled one (netlink-pool.ts).

const CHUNK = 256;
const CHUNK_TIMEOUT_MS = 5000;

const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * The kernel's answer (0 or an errno) to each of `requests` (attributes, after `header`),
 * sent CHUNK to a datagram; undefined: not answered. After a chunk that failed (no answer
 * in time, a socket error) the rest is not sent: each would wait as long, before a
 * take-over's announcement.
 */
export function ctRequests(
  type: number,
  flags: number,
  requests: readonly Buffer[],
  note: (error: string) => void,
  header = nfgenmsg(),
): Promise<(number | undefined)[]> {
  // A socket error (ENOBUFS, say) leaves no request state behind: the socket is lent again.
  return withNetlinkSocket(netlink.Protocol.NETFILTER, async (sock) => {
    // Each chunk's answers: errno by sequence number; `done` when the last one's came, or it failed.
    let answers = new Map<number, number>();
    let last = -1;
    let done: ((answered: boolean) => void) | undefined;
    sock.on('error', (e) => {
      note(`socket: ${e.message}`);
      done?.(false);
    });
    sock.on('message', (datagram) => {
      try {
        for (const m of netlink.parseMessages(datagram)) {
          if (m.type !== NLMSG_ERROR || m.data.length < 4) continue;
          answers.set(m.seq, -m.data.readInt32LE(0));
          if (m.seq === last) done?.(true);
        }
      } catch {
        note('an answer could not be parsed');
      }
    });
    const out: (number | undefined)[] = [];
    for (let i = 0; i < requests.length; i += CHUNK) {
      const chunk = requests.slice(i, i + CHUNK);
      const first = takeSeqs(chunk.length);
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
      const answered = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          note('the kernel did not answer in time');
          resolve(false);
        }, CHUNK_TIMEOUT_MS);
        done = (ok) => {
          clearTimeout(timer);
          resolve(ok);
        };
        sock.send([datagram], {}, (e) => {
          if (e) {
            note(`send: ${e.message}`);
            done?.(false);
          }
        });
      });
      done = undefined;
      // Answered: the kernel reports only failures, so silence is success. Not: only what it said.
      chunk.forEach((_, j) => out.push(answered ? (answers.get(first + j) ?? 0) : answers.get(first + j)));
      if (!answered) break;
      await yieldToLoop();
    }
    while (out.length < requests.length) out.push(undefined);
    return out;
  });
}
