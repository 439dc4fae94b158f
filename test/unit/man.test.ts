import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../helpers.js';

// The man pages are written by hand (man/): they must keep up with the program.

const page = (name: string) => readFileSync(join(REPO, 'man', name), 'utf8');
const cli = (...args: string[]) => spawnSync(join(REPO, 'bin/egress-natd'), args, { encoding: 'utf8' });
/** roff's escapes of the example text: \- is a hyphen. */
const unroff = (s: string) => s.replaceAll('\\-', '-');

t.test('egress-natd(8) documents every command the program has', async (t) => {
  const help = cli('--help').stdout;
  const commands = [...help.matchAll(/^ {2}([a-z]+)\b/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
  t.ok(commands.length >= 10, `commands: ${commands.join(', ')}`);
  const synopsis = unroff(page('egress-natd.8'));
  for (const c of commands)
    t.match(synopsis, new RegExp(`^\\.B(R)? "?egress-natd ${c}\\b`, 'm'), `${c} is in the synopsis`);
});

t.test('the example in egress-natd.yaml(5) passes egress-natd check', async (t) => {
  const text = page('egress-natd.yaml.5');
  const example = /^\.SH EXAMPLE\n\.nf\n([\s\S]*?)^\.fi$/m.exec(text)?.[1];
  t.ok(example, 'an example');
  const dir = mkdtempSync(join(tmpdir(), 'egress-man-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'config.yaml'), unroff(example!));
  t.equal(cli('keygen', join(dir, 'cluster.key')).status, 0, 'a key next to it');
  const check = cli('check', '-c', join(dir, 'config.yaml'));
  t.equal(check.status, 0, `${check.stdout}${check.stderr}`);
  t.match(check.stdout, /ok \(3 nodes, 1 gateways, 1 policies\)/);
});

t.test('every key of the config is in egress-natd.yaml(5)', async (t) => {
  const text = page('egress-natd.yaml.5');
  const schema = readFileSync(join(REPO, 'src/config/schema.ts'), 'utf8');
  const keys = new Set([...schema.matchAll(/^ {2,6}([a-zA-Z]+): /gm)].map((m) => m[1]!).filter((k) => k !== 'message'));
  t.ok(keys.size > 20, `${keys.size} keys in the schema`);
  for (const k of keys) t.match(text, new RegExp(`^\\.(B|SS) (heartbeat\\.)?${k}\\b`, 'm'), k);
});
