import { endianness } from 'node:os';
import { getSystemErrorName } from 'node:util';
import { NLM_F, NLMSG_DONE, NLMSG_ERROR, nlmsg } from './ctnetlink.js';
import { takeSeqs, withNetlinkSocket } from './netlink-pool.js';

// A netlink dump read as it arrives, datagram by datagram, and walked by hand: the
// library's request() gathers the whole dump and parses it in one turn of the loop, with
// some twenty objects per message. For 100,000 conntrack entries that held the event loop
// (and the heartbeats) for about a second; for the counters of 1,000 policies, 100 ms.

const LE = endianness() === 'LE';
export const u16 = (b: Buffer, at: number): number => (LE ? b.readUInt16LE(at) : b.readUInt16BE(at));
const u32 = (b: Buffer, at: number): number => (LE ? b.readUInt32LE(at) : b.readUInt32BE(at));
/** Attribute types carry NLA_F_NESTED / NLA_F_NET_BYTEORDER in their top bits. */
const NLA_TYPE_MASK = 0x3fff;

/**
 * Calls `fn(type, seq, start, end)` for each message in a datagram, its payload being
 * b[start, end). struct nlmsghdr: length u32, type u16, flags u16, seq u32, port u32 (host
 * order). Throws on a message that does not fit.
 */
export function eachMessage(b: Buffer, fn: (type: number, seq: number, start: number, end: number) => void): void {
  for (let at = 0; at + 16 <= b.length;) {
    const len = u32(b, at);
    if (len < 16 || at + len > b.length) throw new Error(`a message of ${len} bytes at ${at}: truncated`);
    fn(u16(b, at + 4), u32(b, at + 8), at + 16, at + len);
    at += (len + 3) & ~3;
  }
}

/** Calls `fn(type, start, end)` for each attribute in b[start, end). */
export function eachAttribute(
  b: Buffer,
  start: number,
  end: number,
  fn: (type: number, from: number, to: number) => void,
): void {
  for (let at = start; at + 4 <= end;) {
    const len = u16(b, at);
    if (len < 4 || at + len > end) return;
    fn(u16(b, at + 2) & NLA_TYPE_MASK, at + 4, at + len);
    at += (len + 3) & ~3;
  }
}

/** A dump's datagrams may stop coming (a wedged socket): give up after this long without one. */
const IDLE_TIMEOUT_MS = 5000;

export interface DumpRequest {
  /** In errors: "the conntrack table", say. */
  readonly what: string;
  readonly protocol: number;
  /** The request's message type and payload. */
  readonly type: number;
  readonly payload: Buffer;
  /** The type of the messages that carry the answer; others are skipped. */
  readonly answer: number;
}

/** Sends a dump request and hands `each` the payload of every answer message, as datagrams arrive. */
export function streamDump(req: DumpRequest, each: (payload: Buffer) => void): Promise<void> {
  return withNetlinkSocket(req.protocol, (socket, spoil) => {
    const seq = takeSeqs();
    return new Promise<void>((resolve, reject) => {
      let idle: NodeJS.Timeout | undefined;
      let ended = false;
      // `complete`: the kernel ended the dump (done, or refused it), so the socket is clean.
      const finish = (err?: Error, complete = false) => {
        if (ended) return;
        ended = true;
        clearTimeout(idle);
        if (!complete) spoil();
        if (err) reject(new Error(`netlink dump of ${req.what} failed: ${err.message}`, { cause: err }));
        else resolve();
      };
      const waitMore = () => {
        clearTimeout(idle);
        idle = setTimeout(() => finish(new Error(`no answer for ${IDLE_TIMEOUT_MS} ms`)), IDLE_TIMEOUT_MS);
      };
      socket.on('error', (e) => finish(e));
      socket.on('message', (datagram) => {
        try {
          eachMessage(datagram, (type, msgSeq, start, end) => {
            if (ended || msgSeq !== seq) return;
            if (type === NLMSG_DONE) return finish(undefined, true);
            if (type === NLMSG_ERROR) {
              const errno = LE ? datagram.readInt32LE(start) : datagram.readInt32BE(start);
              if (errno !== 0) finish(new Error(`the kernel refused it: ${errnoName(errno)}`), true);
            } else if (type === req.answer) each(datagram.subarray(start, end));
          });
          if (!ended) waitMore();
        } catch (e) {
          finish(e as Error);
        }
      });
      socket.send(nlmsg(req.type, NLM_F.REQUEST | NLM_F.DUMP, seq, req.payload), {}, (err) =>
        err ? finish(err) : undefined,
      );
      waitMore();
    });
  });
}

/** "ENOENT" for 2; the number if Node does not know it. */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(errno);
  } catch {
    return String(errno);
  }
}
