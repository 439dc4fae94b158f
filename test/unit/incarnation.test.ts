import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootIncarnation, nextIncarnation, parseIncarnation } from '../../src/daemon/incarnation.js';

// The incarnation is larger on every start, whatever the wall clock does.

const dir = mkdtempSync(join(tmpdir(), 'egress-inc-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const HOUR_US = 3_600_000_000n;
const NOW = 1_763_700_000_000_000n;

t.test('the rule: the clock, unless it is not past the last one used', async (t) => {
  t.equal(nextIncarnation(undefined, NOW), NOW, 'first start: the clock');
  t.equal(nextIncarnation(NOW - 5n, NOW), NOW, 'the clock moved on: the clock');
  t.equal(nextIncarnation(NOW, NOW), NOW + 1n, 'the same µs: one more');
  t.equal(nextIncarnation(NOW, NOW - HOUR_US), NOW + 1n, 'the clock an hour back: still larger than before');
});

t.test('the file: decimal digits that fit a uint64', async (t) => {
  t.equal(parseIncarnation(`${NOW}\n`), NOW);
  t.equal(parseIncarnation('12x'), undefined);
  t.equal(parseIncarnation(''), undefined);
  t.equal(parseIncarnation('18446744073709551615'), undefined, '2^64 - 1 has no successor');
});

t.test('restarts with the clock stepped back: every incarnation larger than the one before', async (t) => {
  const file = join(dir, 'var', 'incarnation');
  const first = bootIncarnation(file, NOW);
  t.same(
    first,
    { incarnation: NOW, persisted: true, problems: [] },
    'no file yet: the clock, and the directory is made',
  );
  t.equal(readFileSync(file, 'utf8'), `${NOW}\n`, 'written before the first heartbeat');
  const back = bootIncarnation(file, NOW - HOUR_US);
  t.same(back, { incarnation: NOW + 1n, previous: NOW, persisted: true, problems: [] }, 'an hour back: the last + 1');
  const later = bootIncarnation(file, NOW + HOUR_US);
  t.equal(later.incarnation, NOW + HOUR_US, 'the clock past it again: the clock');
  writeFileSync(file, 'garbage');
  const bad = bootIncarnation(file, NOW);
  t.equal(bad.incarnation, NOW, 'a damaged file: the clock');
  t.match(bad.problems, [/does not hold an incarnation/], 'and it says so');
});

t.test('a path that cannot be a directory: it starts with the clock and says what it risks', async (t) => {
  writeFileSync(join(dir, 'plain'), '');
  const r = bootIncarnation(join(dir, 'plain', 'incarnation'), NOW);
  t.equal(r.incarnation, NOW);
  t.equal(r.persisted, false);
  t.match(r.problems, [/cannot read/, /cannot write .*replays/]);
});
