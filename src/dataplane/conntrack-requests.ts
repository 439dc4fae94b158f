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
 * sent CHUNK to a datagram; undefined: no answer in time.
 */
export function ctRequests(
  type: number,
  flags: number,
  requests: readonly Buffer[],
  note: (error: string) => void,
  header = nfgenmsg(),
): Promise<(number | undefined)[]> {
  return withNetlinkSocket(netlink.Protocol.NETFILTER, async (sock, spoil) => {
    // Each chunk's answers: errno by sequence number; `done` when the last one's came.
    let answers = new Map<number, number>();
    let last = -1;
    let done: (() => void) | undefined;
    sock.on('error', (e) => {
      note(`socket: ${e.message}`);
      spoil();
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
    return out;
  });
}
