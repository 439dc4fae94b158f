import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatDiagnostic } from '../../src/config/diagnostics.js';
import { loadConfigText } from '../../src/config/load.js';
import { REPO } from '../../lab/paths.js';
import { vagrantConfig } from '../../lab/vagrant.js';

// vagrant/: the Vagrantfile passes `vagrant validate` (Debian's vagrant, with its libvirt
// plugin), and the VMs get the tests' cluster config.

const dir = join(REPO, 'vagrant');
const work = mkdtempSync(join(tmpdir(), 'enat-vagrant-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
// Vagrant's own state goes to the temporary folder, not to the repository or ~/.vagrant.d.
const vagrant = (cwd: string, ...args: string[]) =>
  spawnSync('vagrant', args, {
    cwd,
    encoding: 'utf8',
    env: {
      ...process.env,
      VAGRANT_HOME: join(work, 'home'),
      VAGRANT_DOTFILE_PATH: join(work, 'dot'),
      VAGRANT_CHECKPOINT_DISABLE: '1',
    },
  });

t.test("vagrant/config.yaml is the tests' cluster config for the VMs, and valid", async (t) => {
  const text = readFileSync(join(dir, 'config.yaml'), 'utf8');
  t.equal(text, vagrantConfig(), 'regenerate with: node dist/lab/vagrant.js > vagrant/config.yaml');
  const r = loadConfigText(join(dir, 'config.yaml'), text, () => ({
    exists: true,
    regular: true,
    mode: 0o100600,
    size: 65,
  }));
  t.same(r.diagnostics.map(formatDiagnostic), []);
  t.same(
    r.config?.nodes.map((n) => n.name),
    ['h1', 'h2', 'h3'],
  );
});

t.test('vagrant validate: the Vagrantfile and its libvirt settings', async (t) => {
  const ok = vagrant(dir, 'validate');
  t.equal(ok.status, 0, `${ok.stdout}${ok.stderr}`);
  t.match(ok.stdout, /Vagrantfile validated successfully/);
  const generic = vagrant(dir, 'validate', '--ignore-provider');
  t.equal(generic.status, 0, `without provider settings too: ${generic.stderr}`);
  // The check is real: a misspelt provider setting fails.
  const broken = join(work, 'broken');
  spawnSync('mkdir', ['-p', broken]);
  writeFileSync(
    join(broken, 'Vagrantfile'),
    readFileSync(join(dir, 'Vagrantfile'), 'utf8').replace('lv.cpus = 1', 'lv.cpuz = 1'),
  );
  copyFileSync(join(dir, 'provision.sh'), join(broken, 'provision.sh'));
  const bad = vagrant(broken, 'validate');
  t.not(bad.status, 0, 'a bad libvirt setting is rejected');
  t.match(`${bad.stdout}${bad.stderr}`, /cpuz/);
  t.notOk(spawnSync('test', ['-e', join(dir, '.vagrant')]).status === 0, 'nothing left in vagrant/');
});

t.test('the provisioning script is valid shell', async (t) => {
  const p = spawnSync('bash', ['-n', join(dir, 'provision.sh')], { encoding: 'utf8' });
  t.equal(p.status, 0, p.stderr);
});
