import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import netlink from './netlink-lib.js';
import { parseEntry, type RawEntry } from './conntrack-entry.js';
import { AF_INET, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, NFNL_SUBSYS_CTNETLINK } from './ctnetlink.js';
import { startTied } from './tied.js';

// The kernel's conntrack events (what `conntrack -E` shows): new, updated and destroyed
// entries, from the ctnetlink multicast groups, read by a child process
// (conntrack-events-child.ts says why) and parsed here. A datagram that cannot be parsed
// is skipped, never thrown. When the child ends (events lost), another starts and the
// listener hears `lost`: it should read the table again.

export type ConntrackEvent = { readonly kind: 'update' | 'destroy'; readonly entry: RawEntry };

export interface ConntrackEvents {
  close(): void;
}

export interface EventHandlers {
  readonly events: (events: ConntrackEvent[]) => void;
  /** Events were lost (the kernel dropped some, or the listener restarted): read the table again. */
  readonly lost: (e: Error) => void;
}

const CHILD = fileURLToPath(new URL('./conntrack-events-child.js', import.meta.url));
const RESTART_MS = 200;

/** Parses one datagram of ctnetlink events; what is not an IPv4 entry event is skipped. */
export function parseEvents(datagram: Buffer): { events: ConntrackEvent[]; bad: number } {
  const events: ConntrackEvent[] = [];
  let bad = 0;
  let messages;
  try {
    messages = netlink.parseMessages(datagram);
  } catch {
    return { events, bad: 1 };
  }
  for (const m of messages) {
    if (m.type >> 8 !== NFNL_SUBSYS_CTNETLINK || m.data.length < 4 || m.data[0] !== AF_INET) continue;
    const type = m.type & 0xff;
    if (type !== IPCTNL_MSG_CT_NEW && type !== IPCTNL_MSG_CT_DELETE) continue;
    const entry = parseEntry(m.data.subarray(4));
    if (!entry) bad++;
    else events.push({ kind: type === IPCTNL_MSG_CT_NEW ? 'update' : 'destroy', entry });
  }
  return { events, bad };
}

/** Splits the child's stdout into datagrams (u32 length, then the bytes); the first line is "ready". */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  ready = false;

  push(chunk: Buffer, each: (datagram: Buffer) => void): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    if (!this.ready) {
      const nl = this.buf.indexOf(0x0a);
      if (nl < 0) return;
      this.ready = true;
      this.buf = this.buf.subarray(nl + 1);
    }
    let pos = 0;
    while (this.buf.length - pos >= 4) {
      const len = this.buf.readUInt32BE(pos);
      if (this.buf.length - pos - 4 < len) break;
      each(this.buf.subarray(pos + 4, pos + 4 + len));
      pos += 4 + len;
    }
    this.buf = this.buf.subarray(pos);
  }
}

/** Resolves once listening (the child said so); rejects if the first child cannot start. */
export async function subscribeConntrack(h: EventHandlers): Promise<ConntrackEvents> {
  let child: ChildProcess | undefined;
  let closed = false;
  const start = (): Promise<void> =>
    new Promise((ok, fail) => {
      const reader = new FrameReader();
      const c = startTied([process.execPath, CHILD], (cmd, a) => spawn(cmd, a, { stdio: ['ignore', 'pipe', 'pipe'] }));
      child = c;
      let stderr = '';
      c.stderr.on('data', (d: Buffer) => (stderr = `${stderr}${d.toString()}`.slice(-2048)));
      c.stdout.on('data', (chunk: Buffer) => {
        const wasReady = reader.ready;
        reader.push(chunk, (datagram) => {
          const { events } = parseEvents(datagram);
          if (events.length) h.events(events);
        });
        if (!wasReady && reader.ready) ok();
      });
      c.once('error', fail);
      c.once('close', (code, signal) => {
        if (!reader.ready)
          fail(
            new Error(
              `cannot listen to conntrack events (${signal ?? `exit ${code}`}): ${stderr.trim().split('\n').pop() ?? ''}`,
            ),
          );
        if (closed) return;
        const ended = new Error(`the conntrack event listener ended (${signal ?? `exit ${code}`}); another listens`);
        // Told once another listener runs: what the handler does then (sweep the table) sees
        // every connection made while nobody listened. Told at once, a connection made between
        // that sweep and the new listener was in neither.
        setTimeout(
          () =>
            !closed &&
            void start().then(
              () => !closed && h.lost(ended),
              (e: Error) => h.lost(e),
            ),
          RESTART_MS,
        ).unref();
      });
    });
  await start();
  return {
    close: () => {
      closed = true;
      child?.kill('SIGKILL');
    },
  };
}
