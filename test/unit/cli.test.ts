import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONFIG_DIR, REPO } from '../helpers.js';

// The binary's answers to bad arguments: a clear message on stderr and exit 2, never a stack trace.

const dir = mkdtempSync(join(tmpdir(), 'egress-cli-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'good.key'), 'k'.repeat(64), { mode: 0o600 });
const cfg = join(dir, 'config.yaml');
writeFileSync(cfg, readFileSync(join(CONFIG_DIR, 'valid.yaml'), 'utf8'));

const cli = (...args: string[]) => spawnSync(join(REPO, 'bin/egress-natd'), args, { encoding: 'utf8' });

const bad: [string, string[], RegExp][] = [
  [
    'a missing config file',
    ['check', '-c', join(dir, 'none.yaml')],
    /none\.yaml:1:1: error: cannot read config: no such file/,
  ],
  [
    'an unknown node',
    ['plan', '-c', cfg, '-n', 'nobody'],
    /node "nobody" is not in .*config\.yaml \(known: worker1, worker2, cp1\)/,
  ],
  [
    '--owner without "="',
    ['plan', '-c', cfg, '-n', 'worker1', '--owner', 'worker1'],
    /--owner worker1: expected IP=NODE/,
  ],
  [
    '--owner with a bad IP',
    ['plan', '-c', cfg, '-n', 'worker1', '--owner', '1.2.3=worker1'],
    /--owner 1\.2\.3=worker1: expected IP=NODE/,
  ],
  [
    'an IP given twice',
    ['plan', '-c', cfg, '-n', 'worker1', '--owner', '192.168.1.100=worker1', '--owner', '192.168.1.100=worker2'],
    /192\.168\.1\.100 already has an owner/,
  ],
  [
    'an IP that is not floating',
    ['plan', '-c', cfg, '-n', 'worker1', '--owner', '192.168.1.7=worker1'],
    /192\.168\.1\.7 is not a floating IP/,
  ],
  [
    'an owner the gateway does not admit',
    ['plan', '-c', cfg, '-n', 'worker1', '--owner', '192.168.1.100=cp1'],
    /node "cp1" cannot own 192\.168\.1\.100/,
  ],
  ['an unknown output format', ['plan', '-c', cfg, '-n', 'worker1', '-o', 'yaml'], /argument 'yaml' is invalid/],
  ['an unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
  [
    'run for an unknown node',
    ['run', '-c', cfg, '-n', 'nobody'],
    /node "nobody" is not in .*config\.yaml .*use --node/,
  ],
];

for (const [what, args, message] of bad) {
  t.test(what, async (t) => {
    const p = cli(...args);
    t.equal(p.status, 2, 'exit 2');
    t.match(p.stderr, message);
    t.notMatch(p.stderr, /\n\s+at /, 'no stack trace');
  });
}

t.test('plan output is the same byte for byte, in both formats', async (t) => {
  for (const o of ['nft', 'json']) {
    const a = cli('plan', '-c', cfg, '-n', 'worker1', '--owner', '192.168.1.100=worker2', '-o', o);
    const b = cli('plan', '-c', cfg, '-n', 'worker1', '--owner', '192.168.1.100=worker2', '-o', o);
    t.equal(a.status, 0, a.stderr);
    t.equal(a.stdout, b.stdout, o);
  }
  const json = JSON.parse(
    cli('plan', '-c', cfg, '-n', 'worker2', '--owner', '192.168.1.100=worker2', '-o', 'json').stdout,
  ) as { macvlans: { address: string }[] };
  t.same(
    json.macvlans.map((m) => m.address),
    ['192.168.1.100'],
    'the json is the whole desired state',
  );
});

t.test('status, egress list and drain without a daemon: exit 1 and say so', async (t) => {
  for (const args of [['status'], ['egress', 'list'], ['drain'], ['undrain']]) {
    const r = cli(...args, '--state-dir', dir);
    t.equal(r.status, 1, `${args.join(' ')}: exit 1`);
    t.match(r.stderr, /cannot reach the daemon on .*control\.sock: is egress-natd running\?/);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

// Names always fit a heartbeat (255 bytes): the config allows 63 characters.
t.test(
  'run with a node name too long for the config: exit 2 with its position, before touching anything',
  async (t) => {
    const long = 'n'.repeat(256);
    const file = join(dir, 'long-name.yaml');
    writeFileSync(file, readFileSync(join(CONFIG_DIR, 'valid.yaml'), 'utf8').replace('name: worker1', `name: ${long}`));
    const r = cli('run', '-c', file, '-n', long, '--state-dir', join(dir, 'state'));
    t.equal(r.status, 2, r.stderr);
    t.match(
      r.stderr,
      /long-name\.yaml:14:11: error: nodes\[0\]\.name must be a lowercase name .*at most 63 characters/,
    );
  },
);

t.test('keygen: a new 0600 key, never over an existing one unless --force', async (t) => {
  const key = join(dir, 'keys', 'cluster.key');
  const first = cli('keygen', key);
  t.equal(first.status, 0, first.stderr);
  t.match(first.stdout, /wrote a new cluster key to .*cluster\.key \(mode 0600\)/);
  const text = readFileSync(key, 'utf8');
  t.match(text, /^[A-Za-z0-9+/]{64}\n$/, '48 random bytes in base64, one line');
  t.equal(statSync(key).mode & 0o777, 0o600);
  const again = cli('keygen', key);
  t.equal(again.status, 2, 'exit 2');
  t.match(again.stderr, /cluster\.key exists; not replacing a cluster key/);
  t.equal(readFileSync(key, 'utf8'), text, 'the key is unchanged');
  chmodSync(key, 0o644);
  const forced = cli('keygen', '--force', key);
  t.equal(forced.status, 0, forced.stderr);
  t.not(readFileSync(key, 'utf8'), text, 'replaced');
  t.equal(statSync(key).mode & 0o777, 0o600, 'and 0600 again');
  const other = cli('keygen', join(dir, 'other.key'));
  t.not(readFileSync(join(dir, 'other.key'), 'utf8'), readFileSync(key, 'utf8'), 'each key is new');
  t.equal(other.status, 0);
});
