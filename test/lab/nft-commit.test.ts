import t from 'tap';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { run } from '../../lab/lab.js';
import { NODE } from '../../lab/paths.js';

// A transaction is done when it commits, not when nft exits: after a deletion, nft's exit
// waits 10 to 20 ms for the kernel to free what went (nft-commit.ts). Done early must still
// mean committed, and a transaction the kernel refuses must still fail.

const module = (path: string) => fileURLToPath(new URL(path, import.meta.url));

const script = `
import { execFileSync } from 'node:child_process';
import { runTransaction } from ${JSON.stringify(module('../../src/dataplane/nft.js'))};
import { commitsHeard } from ${JSON.stringify(module('../../src/dataplane/nft-commit.js'))};
const chain = () => execFileSync('nft', ['list', 'chain', 'inet', 't', 'c']).toString();
await runTransaction('table inet t {\\n  chain c {\\n    counter comment "v1"\\n  }\\n}\\n');
const out = { heard: [commitsHeard()], seen: [], error: '' };
for (const v of ['v2', 'v3', 'v4']) {
  // A rule replaced: a deletion, which nft's exit waits for.
  await runTransaction('flush chain inet t c\\nadd rule inet t c counter comment "' + v + '"\\n');
  out.seen.push(chain().includes('"' + v + '"'));
  out.heard.push(commitsHeard());
}
try {
  await runTransaction('add rule inet t nochain counter\\n');
} catch (e) {
  out.error = e.message;
}
out.heard.push(commitsHeard());
console.log(JSON.stringify(out));
process.exit(0); // the listening socket is never closed (it would wait for nf_tables)
`;

t.test('a transaction is done when the kernel says it committed, and not before', async (t) => {
  const ns = `ennc${randomBytes(3).toString('hex')}`;
  await run(['ip', 'netns', 'add', ns]);
  t.teardown(() => run(['ip', 'netns', 'del', ns], { allowFail: true }));
  const out = JSON.parse(
    (await run(['ip', 'netns', 'exec', ns, ...NODE, '--input-type=module', '-e', script])).stdout,
  ) as { heard: number[]; seen: boolean[]; error: string };
  t.same(out.seen, [true, true, true], 'each replaced rule is in the kernel when the transaction returns');
  t.same(out.heard.slice(0, 4), [1, 2, 3, 4], 'each commit was heard (not waited for at exit)');
  t.match(out.error, /nochain|No such file/, 'a refused transaction fails with what nft said');
  t.equal(out.heard[4], 4, 'and no commit is heard for it');
});
