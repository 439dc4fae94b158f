import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatDiagnostic } from '../../src/config/diagnostics.js';
import {
  keySizes,
  parseKeys,
  readKey,
  readKeys,
  rotateKeyFile,
  rotationStep,
  type RotationStep,
} from '../../src/config/key.js';
import { loadConfigText } from '../../src/config/load.js';
import type { KeyFileFacts } from '../../src/config/validate.js';
import { REPO, validText } from '../helpers.js';

// Key files: one key per line (the first signs, all verify), binary keys as before, the
// validator's checks on every key, and the three-step rotation that never splits.

const dir = mkdtempSync(join(tmpdir(), 'egress-key-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const text = (keys: Buffer[]) => keys.map((k) => k.toString());

t.test('a key file with one key reads as before', async (t) => {
  t.same(text(parseKeys(Buffer.from(`${A}\n`)).map((k) => k.key)), [A], 'a keygen file: the line');
  t.same(text(parseKeys(Buffer.from(`${A}\r\n\n`)).map((k) => k.key)), [A], 'trailing CR and newlines dropped');
  t.same(text(parseKeys(Buffer.from(A)).map((k) => k.key)), [A], 'no newline at all');
  const binary = Buffer.from([1, 2, 0x0a, 3, ...Array<number>(40).fill(0xff), 0x0a]);
  t.same(
    parseKeys(binary),
    [{ line: 1, key: binary.subarray(0, binary.length - 1) }],
    'binary: one key, newline bytes inside kept',
  );
  t.same(parseKeys(Buffer.from('\n\n')), [], 'no key');
});

t.test('a key file with several keys: one per line, in order, empty lines skipped', async (t) => {
  const file = join(dir, 'two.key');
  writeFileSync(file, `${A}\n\n${B}\r\n`, { mode: 0o600 });
  t.same(text([...readKeys(file)]), [A, B]);
  t.equal(readKey(file).toString(), A, 'the first signs');
  t.same(keySizes(file), [
    { line: 1, size: 64 },
    { line: 3, size: 64 },
  ]);
  t.throws(() => readKeys(join(dir, 'none.key')), /cannot read key file/);
  writeFileSync(join(dir, 'empty.key'), '\n', { mode: 0o600 });
  t.throws(() => readKeys(join(dir, 'empty.key')), /holds no key/);
});

t.test('the validator checks every key', async (t) => {
  const facts =
    (keys: { line: number; size: number }[]): ((p: string) => KeyFileFacts) =>
    () => ({ exists: true, regular: true, mode: 0o100600, size: 200, keys });
  const check = (keys: { line: number; size: number }[]) =>
    loadConfigText('valid.yaml', validText(), facts(keys))
      .diagnostics.filter((d) => d.severity === 'error')
      .map(formatDiagnostic);
  t.same(check([{ line: 1, size: 64 }]), [], 'one good key');
  t.same(
    check([
      { line: 1, size: 64 },
      { line: 2, size: 32 },
    ]),
    [],
    'two good keys',
  );
  t.match(check([{ line: 1, size: 20 }]), [/key file .* holds 20 bytes; a cluster key needs at least 32/]);
  t.match(
    check([
      { line: 1, size: 64 },
      { line: 2, size: 24 },
    ]),
    [/the key on line 2 holds 24 bytes; every key needs at least 32 \(one key per line\)/],
    'a short second key is refused: a wrapped key is not two keys',
  );
  t.match(check([]), [/holds no key/]);
});

t.test('rotation steps: rotate adds a verifying key, promote makes it sign, retire drops the old', async (t) => {
  const fresh = () => 'N';
  t.same(rotationStep(['O'], 'rotate', fresh), ['O', 'N']);
  t.same(rotationStep(['O', 'N'], 'promote', fresh), ['N', 'O']);
  t.same(rotationStep(['N', 'O'], 'retire', fresh), ['N']);
  t.throws(() => rotationStep(['O', 'N'], 'rotate', fresh), /a rotation is under way/);
  t.throws(() => rotationStep(['O'], 'promote', fresh), /start a rotation with --rotate/);
  t.throws(() => rotationStep(['O'], 'retire', fresh), /nothing to retire/);
});

/** Whether every host verifies what every other host signs, for hosts holding these key lists. */
const connected = (hosts: readonly string[][]): boolean => hosts.every((a) => hosts.every((b) => b.includes(a[0]!)));

/** Every state a rolling change passes through: each step done host by host, in every order of hosts. */
function* rolling(n: number, steps: readonly RotationStep[]): Generator<string[][]> {
  let hosts = Array.from({ length: n }, () => ['O']);
  const perms = (xs: number[]): number[][] =>
    xs.length <= 1 ? [xs] : xs.flatMap((x, i) => perms([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
  for (const step of steps) {
    const after = rotationStep(hosts[0]!, step, () => 'N');
    for (const order of perms([...Array(n).keys()])) {
      const state = hosts.map((h) => [...h]);
      for (const i of order) {
        state[i] = after;
        yield state.map((h) => [...h]);
      }
    }
    hosts = hosts.map(() => after);
  }
}

t.test('the three-step rotation never splits a cluster; promoting first (two steps) would', async (t) => {
  for (const n of [2, 3, 4]) {
    const states = [...rolling(n, ['rotate', 'promote', 'retire'])];
    t.ok(states.every(connected), `${n} hosts: all ${states.length} intermediate states hear each other`);
    t.same(states[states.length - 1]![0], ['N'], 'and it ends on the new key alone');
  }
  // The two-step way: [old] → [new, old] → [new]. The first host that signs with the new
  // key is not heard by hosts that have only the old one.
  t.notOk(connected([['N', 'O'], ['O'], ['O']]), 'the new key signing before every host has it splits');
});

t.test('rotateKeyFile: atomic, 0600, and refuses a binary key', async (t) => {
  const file = join(dir, 'rot.key');
  writeFileSync(file, `${A}\n`, { mode: 0o600 });
  const [old, added] = rotateKeyFile(file, 'rotate');
  t.equal(old, A);
  t.match(added, /^[A-Za-z0-9+/]{64}$/, 'a new keygen key');
  t.equal(readFileSync(file, 'utf8'), `${A}\n${added}\n`);
  t.equal(statSync(file).mode & 0o777, 0o600);
  rotateKeyFile(file, 'promote');
  t.equal(readFileSync(file, 'utf8'), `${added}\n${A}\n`);
  rotateKeyFile(file, 'retire');
  t.equal(readFileSync(file, 'utf8'), `${added}\n`);
  const bin = join(dir, 'bin.key');
  writeFileSync(bin, Buffer.alloc(40, 0xfe), { mode: 0o600 });
  t.throws(() => rotateKeyFile(bin, 'rotate'), /binary key/);
});

t.test('egress-natd keygen --rotate, --promote, --retire: each step says what comes next', async (t) => {
  const cli = (...args: string[]) => spawnSync(join(REPO, 'bin/egress-natd'), args, { encoding: 'utf8' });
  const file = join(dir, 'cli.key');
  t.equal(cli('keygen', file).status, 0);
  const old = readFileSync(file, 'utf8');
  const r1 = cli('keygen', file, '--rotate');
  t.equal(r1.status, 0, r1.stderr);
  t.match(r1.stdout, /2 keys \(step 1 of 3: .*then run keygen --promote\)/);
  t.equal(readFileSync(file, 'utf8').split('\n')[0], old.trim(), 'the old key still signs');
  const again = cli('keygen', file, '--rotate');
  t.equal(again.status, 2, 'a second rotation before this one ends: exit 2');
  t.match(again.stderr, /a rotation is under way/);
  t.match(cli('keygen', file, '--promote').stdout, /step 2 of 3: .*then run keygen --retire/);
  t.match(cli('keygen', file, '--retire').stdout, /1 key \(step 3 of 3/);
  t.not(readFileSync(file, 'utf8'), old, 'a new key alone');
  t.equal(cli('keygen', file, '--rotate', '--force').status, 2, '--force does not go with a rotation step');
});
