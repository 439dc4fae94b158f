import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/model.js';
import { Planner, THREAD_CIDRS } from '../../src/daemon/planner.js';
import { PlannerCore } from '../../src/daemon/planner-core.js';
import { CONFIG_DIR } from '../helpers.js';

// The planner gives the same answers inline and on its thread; big configs go to the thread.

const KEY = Buffer.from('k'.repeat(64));
const OWNERS = new Map([['192.168.1.100', 'worker1']]);

function site(t: { teardown(fn: () => void): void }, extraPolicies = '') {
  const dir = mkdtempSync(join(tmpdir(), 'planner-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'good.key'), KEY, { mode: 0o600 });
  const file = join(dir, 'config.yaml');
  const write = (text: string) => writeFileSync(file, text);
  write(readFileSync(join(CONFIG_DIR, 'valid.yaml'), 'utf8') + extraPolicies);
  const { config, diagnostics } = loadConfig(file);
  if (!config) throw new Error(JSON.stringify(diagnostics));
  return { file, write, config };
}

/** Policies with `n` source CIDRs in all, to cross the thread threshold. */
function bigPolicies(n: number): string {
  const ip = (i: number) => `20.${(i >> 8) & 255}.${i & 255}.0/24`;
  const per = 100;
  return Array.from({ length: Math.ceil(n / per) }, (_, p) => {
    const cidrs = Array.from({ length: per }, (_, i) => ip(p * per + i)).join(', ');
    return `  - { name: big${p}, sources: [{ cidrs: [${cidrs}] }], destinations: [{ cidr: 120.${p}.0.0/16 }], action: SNAT, gatewayRef: default, egressIP: 192.168.1.101 }\n`;
  }).join('');
}

const newPlanner = (config: Config) => new Planner(config, 'worker1', (e) => t.fail(e.message));

t.test('inline: plans, and leaves out a plan equal to the applied one', async (t) => {
  const { config } = site(t);
  const p = newPlanner(config);
  t.teardown(() => p.close());
  t.equal(p.where, 'inline', 'an ordinary config is planned inline');
  const first = await p.plan(config.digest, OWNERS, '');
  t.ok(first.desired, 'a new plan comes with its desired state');
  t.same(
    first.desired!.macvlans.map((m) => m.address),
    ['192.168.1.100'],
  );
  const again = await p.plan(config.digest, OWNERS, first.fingerprint);
  t.same(again, { fingerprint: first.fingerprint }, 'the same plan: only its fingerprint');
  await t.rejects(p.plan('ab'.repeat(32), OWNERS, ''), /no config with digest abababababab/);
});

t.test('a big config is planned on the thread, with the same answers', async (t) => {
  const { config } = site(t, bigPolicies(THREAD_CIDRS));
  const p = newPlanner(config);
  t.teardown(() => p.close());
  t.equal(p.where, 'thread');
  const threaded = await p.plan(config.digest, OWNERS, '');
  const inline = new PlannerCore({ configs: [config], node: 'worker1', indexes: new Map() }).handle({
    op: 'plan',
    digest: config.digest,
    owners: [...OWNERS],
    unless: '',
  });
  t.same(threaded, inline, 'the thread answers what the inline planner answers');
});

t.test('reload: errors change nothing; a good file is planned once a plan names it', async (t) => {
  const { file, write, config } = site(t);
  const p = newPlanner(config);
  t.teardown(() => p.close());
  write('version: 1\ncluster: {}\n');
  const bad = await p.load(file, [KEY], config.digest);
  t.equal(bad.ok, false);
  t.match(bad.ok ? [] : bad.errors, [/config\.yaml:\d+:\d+: error: /], 'positioned errors');
  t.ok((await p.plan(config.digest, OWNERS, '')).desired, 'still plans with the running config');

  write(readFileSync(join(CONFIG_DIR, 'valid.yaml'), 'utf8').replace('8.8.8.0/24', '9.9.9.0/24'));
  const good = await p.load(file, [KEY], config.digest);
  if (!good.ok) return t.fail(good.errors.join('\n'));
  t.equal(good.unchanged, false);
  t.same(good.summary?.['policiesChanged'], ['egress'], 'the summary names the changed policy');
  t.ok((await p.plan(config.digest, OWNERS, '')).desired, 'the old digest still plans until the new one is named');
  const next = await p.plan(good.config.digest, OWNERS, '');
  const change = await p.change(next.fingerprint, { exists: false, chains: new Map(), sets: new Map() });
  t.match(change.staged, /9\.9\.9\.0/, 'the new config is planned');
  await t.rejects(p.plan(config.digest, OWNERS, ''), /no config with digest/, 'and the old one is gone');
});

t.test('a reader that cannot run fails the reload, and the planner plans on', async (t) => {
  const { file, config } = site(t);
  const p = new Planner(
    config,
    'worker1',
    (e) => t.fail(e.message),
    () => Promise.reject(new Error('spawn node: ENOMEM')),
  );
  t.teardown(() => p.close());
  const r = await p.load(file, [KEY], config.digest);
  t.same(r, { ok: false, errors: [`${file}: error: spawn node: ENOMEM`], warnings: [] }, 'a failed reload, said');
  t.ok((await p.plan(config.digest, OWNERS, '')).desired, 'still plans with the running config');
});

t.test('a big file moves a reload to the thread', async (t) => {
  const { file, write, config } = site(t);
  const p = newPlanner(config);
  t.teardown(() => p.close());
  write(readFileSync(join(CONFIG_DIR, 'valid.yaml'), 'utf8') + bigPolicies(THREAD_CIDRS));
  const r = await p.load(file, [KEY], config.digest);
  t.equal(p.where, 'thread', 'a file of 64 KiB or more is read on the thread');
  t.ok(r.ok, 'and read there');
  if (r.ok) t.ok((await p.plan(r.config.digest, OWNERS, '')).desired);
});

t.test('reloads before any plan: the daemon says which config it runs', async (t) => {
  const { file, write, config } = site(t);
  const p = newPlanner(config);
  t.teardown(() => p.close());
  const original = readFileSync(join(CONFIG_DIR, 'valid.yaml'), 'utf8');
  // A SIGHUP while the daemon still listens: it takes the new config, but plans nothing yet.
  write(original.replace('8.8.8.0/24', '9.9.9.0/24'));
  const y = await p.load(file, [KEY], config.digest);
  if (!y.ok) return t.fail(y.errors.join('\n'));
  // Another SIGHUP with the original file: a change from what the daemon runs now (y).
  write(original);
  const back = await p.load(file, [KEY], y.config.digest);
  if (!back.ok) return t.fail(back.errors.join('\n'));
  t.equal(back.unchanged, false, 'the original file differs from the config the daemon runs');
  t.ok((await p.plan(back.config.digest, OWNERS, '')).desired, 'and is planned');

  // The same file twice: unchanged, and the daemon's config can still be planned.
  write(original.replace('8.8.8.0/24', '7.7.7.0/24'));
  const z = await p.load(file, [KEY], back.config.digest);
  if (!z.ok) return t.fail(z.errors.join('\n'));
  const zAgain = await p.load(file, [KEY], z.config.digest);
  t.ok(zAgain.ok && zAgain.unchanged, 'unchanged against the config the daemon runs');
  write('version: 1\n');
  t.equal((await p.load(file, [KEY], z.config.digest)).ok, false, 'a bad file');
  t.ok(
    (await p.plan(z.config.digest, OWNERS, '')).desired,
    'neither an unchanged nor a bad file loses the running config',
  );
});
