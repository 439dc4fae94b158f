import { mkdirSync, chmodSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';

// The daemon's control socket: one JSON request line in, one JSON answer line out.
// It lives in the state directory (0700, root) and is itself 0600: only root may ask.
// It is also the lock on the state dir: a socket that accepts a connection has a live
// daemon behind it (the kernel refuses connections once that process is gone), across
// network namespaces and without pid files that a reused pid could fool. So a second
// daemon on the same state dir stops instead of removing the first one's socket.

export type Request = { readonly cmd: 'status' | 'egress-list' | 'drain' | 'undrain' };
export type Answer = { readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly error: string };

export const controlPath = (stateDir: string): string => join(stateDir, 'control.sock');
const MAX_REQUEST = 4096;

export async function serveControl(stateDir: string, handle: (r: Request) => Promise<unknown>): Promise<Server> {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = controlPath(stateDir);
  if (await answers(path))
    throw new Error(
      `another egress-natd is running with the state dir ${stateDir} (its control socket ${path} answers)`,
    );
  rmSync(path, { force: true }); // left by a daemon that died
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_REQUEST)
        return void sock.end(`${JSON.stringify({ ok: false, error: 'request too long' })}\n`);
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = '';
      void answer(line).then((a) => sock.end(`${JSON.stringify(a)}\n`));
    });
  });
  const answer = async (line: string): Promise<Answer> => {
    let req: Request;
    try {
      req = JSON.parse(line) as Request;
    } catch {
      return { ok: false, error: 'not JSON' };
    }
    if (!['status', 'egress-list', 'drain', 'undrain'].includes(req?.cmd))
      return { ok: false, error: `unknown command ${JSON.stringify(req?.cmd)}` };
    try {
      return { ok: true, result: await handle(req) };
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    }
  };
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(path, () => ok());
  });
  chmodSync(path, 0o600);
  return server;
}

/** Whether something accepts connections on the unix socket `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection(path);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

export class ControlError extends Error {}

export function askDaemon(stateDir: string, req: Request, timeoutMs = 5000): Promise<unknown> {
  const path = controlPath(stateDir);
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new ControlError(`no answer from the daemon on ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: string) => (buf += d));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? 'is egress-natd running?'
          : e.code === 'EACCES'
            ? 'root only'
            : e.message;
      reject(new ControlError(`cannot reach the daemon on ${path}: ${why}`));
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        const a = JSON.parse(buf) as Answer;
        if (a.ok) resolve(a.result);
        else reject(new ControlError(a.error));
      } catch {
        reject(new ControlError(`bad answer from the daemon: ${buf.slice(0, 200)}`));
      }
    });
  });
}
