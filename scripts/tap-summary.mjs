// Passes TAP through and ends with the plain line CI reads: "N passed, N failed".
// Every test point counts, at any depth. "# SKIP" points, and "# TODO" points with every
// point of their subtest (printed before them, indented deeper), count as skipped: a todo
// reports what is known to be open without failing the run, as tap itself does.
import { createInterface } from 'node:readline';
const points = []; // { indent, status: 'passed' | 'failed' | 'skipped' }
for await (const line of createInterface({ input: process.stdin })) {
  process.stdout.write(`${line}\n`);
  const m = /^(\s*)(not ok|ok) \d+/.exec(line);
  if (!m) continue;
  const indent = m[1].length;
  const directive = /#\s*(SKIP|TODO)\b/i.exec(line)?.[1]?.toUpperCase();
  if (directive === 'TODO')
    for (let i = points.length - 1; i >= 0 && points[i].indent > indent; i--) points[i].status = 'skipped';
  points.push({ indent, status: directive ? 'skipped' : m[2] === 'ok' ? 'passed' : 'failed' });
}
const count = (s) => points.filter((p) => p.status === s).length;
const skipped = count('skipped');
process.stdout.write(
  `\n${count('passed')} passed, ${count('failed')} failed${skipped ? `, ${skipped} skipped` : ''}\n`,
);
