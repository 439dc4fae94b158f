import t from 'tap';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DAEMON_NODE_FLAGS, REPO } from '../../lab/paths.js';

// How users get egress-natd: `make install` into a DESTDIR, `make uninstall`, the Debian
// package installed, removed and purged by dpkg (in a root of its own, with the
// maintainer scripts run outside a chroot), and the systemd unit checked by systemd.

const run = (cmd: string, args: string[], env: Record<string, string> = {}) => {
  const p = spawnSync(cmd, args, {
    cwd: REPO,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: p.status, out: `${p.stdout}${p.stderr}`, stdout: p.stdout };
};
const mode = (f: string) => statSync(f).mode & 0o777;
/** Every path under `root`, relative, sorted. */
const tree = (root: string, under = ''): string[] =>
  readdirSync(join(root, under), { withFileTypes: true })
    .flatMap((e) => {
      const rel = join(under, e.name);
      return e.isDirectory() ? [`${rel}/`, ...tree(root, rel)] : [rel];
    })
    .sort();

const work = mkdtempSync(join(tmpdir(), 'enat-install-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

t.test('make install into a DESTDIR, with a PREFIX; again; make uninstall', async (t) => {
  const dest = join(work, 'dest');
  const env = { DESTDIR: dest, PREFIX: '/opt/enat' };
  const first = run('make', ['-s', 'install'], env);
  t.equal(first.code, 0, first.out);
  const bin = join(dest, 'opt/enat/bin/egress-natd');
  const lib = join(dest, 'opt/enat/lib/egress-natd');
  const unit = join(dest, 'opt/enat/lib/systemd/system/egress-natd.service');
  const etc = join(dest, 'etc/egress-natd');
  t.equal(mode(bin), 0o755);
  t.match(
    readFileSync(bin, 'utf8'),
    `exec node ${DAEMON_NODE_FLAGS.join(' ')} "/opt/enat/lib/egress-natd/bin/egress-natd" "$@"`,
    'the command runs the installed tree (without DESTDIR), with the flags the lab runs daemons with',
  );
  t.ok(existsSync(join(lib, 'node_modules/pino/package.json')), 'production dependencies');
  t.notOk(existsSync(join(lib, 'node_modules/tap')), 'no development dependencies');
  t.same(readdirSync(join(lib, 'dist')), ['src'], 'the program only: no lab, tests or benchmarks');
  for (const page of ['man8/egress-natd.8.gz', 'man5/egress-natd.yaml.5.gz'])
    t.equal(mode(join(dest, 'opt/enat/share/man', page)), 0o644, `the man page ${page}`);
  const unitText = readFileSync(unit, 'utf8');
  t.match(unitText, 'ExecStart=/opt/enat/bin/egress-natd run --config /etc/egress-natd/config.yaml');
  t.match(
    unitText,
    'ExecStopPost=/usr/bin/nice -n 10 /opt/enat/bin/egress-natd release --keep-steering --config /etc/egress-natd/config.yaml',
  );
  t.equal(mode(join(etc, 'config.yaml')), 0o644);
  t.equal(mode(join(etc, 'cluster.key')), 0o600, 'a key, 0600');
  t.match(readFileSync(join(etc, 'cluster.key'), 'utf8'), /^[A-Za-z0-9+/]{64}\n$/, 'made by egress-natd keygen');
  const check = run(process.execPath, [join(lib, 'bin/egress-natd'), 'check', '-c', join(etc, 'config.yaml')]);
  t.equal(check.code, 0, `the installed program accepts the installed example config and key: ${check.out}`);
  const version = run(process.execPath, [join(lib, 'bin/egress-natd'), '--version']);
  t.equal(
    version.stdout.trim(),
    (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version,
  );

  // A second install must keep what the admin has.
  writeFileSync(join(etc, 'config.yaml'), '# mine\n');
  const key = readFileSync(join(etc, 'cluster.key'), 'utf8');
  const second = run('make', ['-s', 'install'], env);
  t.equal(second.code, 0, second.out);
  t.match(second.out, /config\.yaml exists: left as it is/);
  t.equal(readFileSync(join(etc, 'config.yaml'), 'utf8'), '# mine\n', 'an existing config is never overwritten');
  t.equal(readFileSync(join(etc, 'cluster.key'), 'utf8'), key, 'nor an existing key');

  const gone = run('make', ['-s', 'uninstall'], env);
  t.equal(gone.code, 0, gone.out);
  t.same(
    tree(join(dest, 'opt/enat')).filter((p) => !p.endsWith('/')),
    [],
    'no file of the program or the unit is left',
  );
  t.same(readdirSync(etc).sort(), ['cluster.key', 'config.yaml'], 'config and key stay');
});

t.test('the systemd unit passes systemd-analyze verify and asks for what the issue says', async (t) => {
  const unit = readFileSync(join(REPO, 'systemd/egress-natd.service'), 'utf8');
  for (const line of [
    'Type=notify',
    'WatchdogSec=',
    'ExecReload=/bin/kill -HUP $MAINPID',
    // After any end of the daemon: give up the floating IPs, keep the steering (lab.stopPost does the same).
    'ExecStopPost=/usr/bin/nice -n 10 /usr/bin/egress-natd release --keep-steering --config /etc/egress-natd/config.yaml',
    // The loop above the workloads; check and release back at nice 0.
    'Nice=-10',
    'ExecStartPre=/usr/bin/nice -n 10 /usr/bin/egress-natd check',
    'Restart=on-failure',
    'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
  ]) {
    t.ok(
      unit.split('\n').some((l) => l.startsWith(line)),
      line,
    );
  }
  // verify checks that each command exists: point them at this repository's program.
  const dir = join(work, 'unit');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'egress-natd.service'),
    unit.replaceAll('/usr/bin/egress-natd', join(REPO, 'bin/egress-natd')),
  );
  const v = run('systemd-analyze', ['verify', join(dir, 'egress-natd.service')]);
  t.equal(v.code, 0, 'exit 0');
  t.equal(v.out.trim(), '', `no complaint: ${v.out}`);
});

t.test('make deb: installs, is removed and purged cleanly by dpkg', async (t) => {
  const built = run('make', ['-s', 'deb']);
  t.equal(built.code, 0, built.out);
  const deb = join(REPO, built.stdout.trim().split('\n').at(-1)!);
  t.match(deb, /build\/egress-natd_[\d.]+_\w+\.deb$/);
  const info = run('dpkg-deb', ['--field', deb, 'Package', 'Depends']);
  t.match(
    info.stdout,
    /Package: egress-natd\nDepends: nodejs \(>= 20\), nftables, iproute2, iputils-arping, procps, libc6/,
  );
  const contents = run('dpkg-deb', ['--contents', deb]).stdout;
  t.match(contents, './usr/bin/egress-natd');
  t.match(contents, './usr/lib/systemd/system/egress-natd.service');
  t.notMatch(contents, /\.\/etc\//, 'the package ships no config and no key: postinst makes them on the host');
  t.match(contents, './usr/share/man/man8/egress-natd.8.gz');
  t.match(contents, './usr/share/man/man5/egress-natd.yaml.5.gz');
  t.notMatch(contents, /prebuilds\/linux-(arm|arm64|ia32)\//, "no other architecture's native addons");
  // Errors and warnings; packaging/deb/lintian-overrides explains each tag it silences.
  const lint = run('lintian', ['--fail-on', 'error,warning', deb]);
  t.equal(lint.code, 0, 'lintian: exit 0');
  t.equal(lint.stdout.trim(), '', `lintian reports nothing: ${lint.stdout}`);
  const unused = run('lintian', ['--display-info', deb]).stdout;
  t.notMatch(unused, /unused-override/, 'every override is needed');

  // A root of its own, with an empty dpkg database; maintainer scripts see it as $DPKG_ROOT.
  const root = join(work, 'root');
  mkdirSync(join(root, 'var/lib/dpkg/info'), { recursive: true });
  mkdirSync(join(root, 'var/lib/dpkg/updates'), { recursive: true });
  writeFileSync(join(root, 'var/lib/dpkg/status'), '');
  // --force-depends: nodejs, nftables, ... are installed on the machine, not in this root.
  const dpkg = (...args: string[]) =>
    run('dpkg', [`--root=${root}`, '--force-script-chrootless', '--force-depends', ...args]);
  const installed = dpkg('-i', deb);
  t.equal(installed.code, 0, installed.out);
  t.match(run('dpkg', [`--root=${root}`, '-s', 'egress-natd']).stdout, /Status: install ok installed/);
  const etc = join(root, 'etc/egress-natd');
  t.equal(mode(join(etc, 'cluster.key')), 0o600, 'postinst made a key');
  t.match(readFileSync(join(etc, 'cluster.key'), 'utf8'), /^[A-Za-z0-9+/]{64}\n$/);
  const check = run(process.execPath, [
    join(root, 'usr/lib/egress-natd/bin/egress-natd'),
    'check',
    '-c',
    join(etc, 'config.yaml'),
  ]);
  t.equal(check.code, 0, `postinst wrote the example config; the packaged program accepts it: ${check.out}`);
  const key = readFileSync(join(etc, 'cluster.key'), 'utf8');
  const again = dpkg('-i', deb);
  t.equal(again.code, 0, again.out);
  t.equal(readFileSync(join(etc, 'cluster.key'), 'utf8'), key, 'reinstalling keeps the key');

  const removed = dpkg('-r', 'egress-natd');
  t.equal(removed.code, 0, removed.out);
  t.same(
    tree(root).filter((p) => !p.startsWith('var/lib/dpkg') && !p.endsWith('/')),
    ['etc/egress-natd/cluster.key', 'etc/egress-natd/config.yaml'],
    'remove: only the config and the key are left',
  );
  const purged = dpkg('-P', 'egress-natd');
  t.equal(purged.code, 0, purged.out);
  t.same(
    tree(root).filter((p) => !p.startsWith('var/')),
    ['etc/'],
    'purge: nothing is left',
  );
  t.notMatch(run('dpkg', [`--root=${root}`, '-l']).stdout, /egress-natd/, 'dpkg forgot the package');
});
