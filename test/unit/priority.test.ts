import t from 'tap';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

// The daemon's loop thread runs at nice -10; the threads and processes it starts go back
// to nice 0. A process of its own, since the nice value sticks to the thread.

const module = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const run = promisify(execFile);

const script = (startAt: number) => `
import { setPriority, getPriority } from 'node:os';
import { spawn } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { raiseLoopPriority, lowerStarted, startedPriority } from ${JSON.stringify(module('../../src/dataplane/priority.js'))};
setPriority(0, ${startAt});
const raised = raiseLoopPriority();
const inWorker = \`
  import { parentPort, workerData } from 'node:worker_threads';
  import { getPriority } from 'node:os';
  import { lowerThisThread } from ${JSON.stringify(new URL('../../src/dataplane/priority.js', import.meta.url).href)};
  const inherited = getPriority(0);
  lowerThisThread(workerData);
  parentPort.postMessage([inherited, getPriority(0)]);\`;
const worker = new Worker(new URL('data:text/javascript,' + encodeURIComponent(inWorker)), { workerData: startedPriority() });
const [workerInherited, workerNow] = await new Promise((r) => worker.once('message', r));
await worker.terminate();
const child = spawn('sleep', ['5']);
lowerStarted(child.pid);
const childNice = getPriority(child.pid);
child.kill();
console.log(JSON.stringify({ raised, loop: getPriority(0), workerInherited, workerNow, childNice }));
`;

async function measure(startAt: number, as: string[] = []) {
  // `env -i`: not tap's environment, which it adds to every child it sees started (its
  // hooks write process records that nobody may not write).
  const argv = [...as, process.execPath, '--input-type=module', '-e', script(startAt)];
  const { stdout } = await run('env', ['-i', `PATH=${process.env['PATH']}`, ...argv]);
  return JSON.parse(stdout) as Record<string, unknown>;
}

const root = process.getuid?.() === 0;

t.test('run by hand as root: the daemon lowers its loop thread to -10', { skip: !root && 'needs root' }, async (t) => {
  const r = await measure(0);
  t.same(r['raised'], { from: 0, to: -10 });
  t.equal(r['loop'], -10, 'the loop thread');
  t.equal(r['workerInherited'], -10, 'a thread made afterwards inherits it...');
  t.equal(r['workerNow'], 0, '...and goes back to 0');
  t.equal(r['childNice'], 0, 'a child goes back to 0');
});

t.test('under the unit (Nice=-10): found set, the rest at 0', { skip: !root && 'needs root' }, async (t) => {
  const r = await measure(-10);
  t.same(r['raised'], { from: -10, to: -10 });
  t.equal(r['loop'], -10);
  t.equal(r['workerNow'], 0);
  t.equal(r['childNice'], 0);
});

t.test(
  'a daemon niced by its operator: its loop at -10, the rest at its own value',
  { skip: !root && 'needs root' },
  async (t) => {
    const r = await measure(5);
    t.equal(r['loop'], -10);
    t.equal(r['workerNow'], 5);
    t.equal(r['childNice'], 5);
  },
);

t.test(
  'without the right to: it says why, and everything stays at its value',
  { skip: !root && 'needs root' },
  async (t) => {
    const r = await measure(0, ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--']);
    t.match(r['raised'], { from: 0, error: /EACCES|EPERM/ });
    t.equal(r['loop'], 0);
    t.equal(r['workerNow'], 0);
    t.equal(r['childNice'], 0);
  },
);
