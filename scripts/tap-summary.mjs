// Passes TAP through and ends with the plain line CI reads: "N passed, N failed".
// Every test point counts, at any depth; "# SKIP" points are reported as skipped.
import { createInterface } from 'node:readline';
let passed = 0,
  failed = 0,
  skipped = 0;
for await (const line of createInterface({ input: process.stdin })) {
  process.stdout.write(`${line}\n`);
  const m = /^\s*(not ok|ok) \d+/.exec(line);
  if (!m) continue;
  if (/#\s*SKIP/i.test(line)) skipped++;
  else if (m[1] === 'ok') passed++;
  else failed++;
}
process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
