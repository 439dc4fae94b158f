import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitUntil, type ClusterSite } from './cluster.js';
import { Lab, ROUTER_IP, run, SUBNET_PREFIX, type ContainerSpec, type HostSpec } from './lab.js';
import { debDepends, machineRootfs } from './rootfs.js';

// The machines lab: the hosts are Debian 13 machines booted with systemd-nspawn (systemd
// as their PID 1, the .deb installed with apt, the service run by systemd), each on an
// overlay of the cached root filesystem (rootfs.ts). Their host0 is a port of the lab's
// bridge: nspawn runs in the bridge's namespace and makes the machine's network namespace
// itself (then /proc/sys/net is writable in the machine), which is given the lab's name
// for the host (`ip netns attach`), so that Lab's helpers (sh, probe, probers) reach it.
// The router, the echo server and the containers stay namespaces, as in the lab.

export const MACHINE_HOSTS: HostSpec[] = [
  { name: 'h1', ip: `${SUBNET_PREFIX}.1`, labels: { egress: 'yes' } },
  { name: 'h2', ip: `${SUBNET_PREFIX}.2`, labels: { egress: 'yes' } },
  { name: 'h3', ip: `${SUBNET_PREFIX}.3` },
];
/** The shop workload (10.10.1.0/24 in the cluster config) behind h3, which may not own its IP. */
export const MACHINE_CONTAINERS: ContainerSpec[] = [{ name: 'c1', host: 'h3', cidr: '10.10.1.0/24', ip: '10.10.1.2' }];

/** The tests' cluster config on the machines: their interface is host0; config and key in /etc/egress-natd. */
export const machineSite = (lab: Lab): ClusterSite => ({
  name: lab.id,
  keyFile: '/etc/egress-natd/cluster.key',
  interface: 'host0',
  hosts: MACHINE_HOSTS,
  subnetPrefix: SUBNET_PREFIX,
});

const MACHINE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
type RunOpts = { allowFail?: boolean; timeoutMs?: number };

/** One booted machine. Commands run in all of its namespaces, as a shell on it would. */
export class Machine {
  /** Resolves when systemd-nspawn has exited (the machine powered off). */
  readonly exited: Promise<void>;
  /** Its PID 1 (systemd), in our PID namespace; 0 until it started. */
  leader = 0;

  constructor(
    readonly spec: HostSpec,
    /** The directory its root is mounted on (an overlay). */
    readonly root: string,
    private readonly nspawn: ChildProcess,
  ) {
    this.exited = new Promise((ok) => {
      if (nspawn.exitCode !== null || nspawn.signalCode !== null) ok();
      else nspawn.once('exit', () => ok());
    });
  }

  get name(): string {
    return this.spec.name;
  }

  get running(): boolean {
    return this.nspawn.exitCode === null && this.nspawn.signalCode === null;
  }

  exec(argv: readonly string[], opts: RunOpts = {}) {
    // A clean environment, as a shell on the machine has: not the test runner's (NODE_OPTIONS names its hooks).
    const env = ['env', '-i', `PATH=${MACHINE_PATH}`, 'LANG=C.UTF-8'];
    return run(['nsenter', '-t', String(this.leader), '-m', '-u', '-i', '-n', '-p', '--', ...env, ...argv], opts);
  }

  sh(script: string, opts: RunOpts = {}) {
    return this.exec(['sh', '-c', script], opts);
  }

  /** `systemctl show` of egress-natd (or `unit`): the properties asked for. */
  async show(props: readonly string[], unit = 'egress-natd'): Promise<Record<string, string>> {
    const out = (await this.exec(['systemctl', 'show', unit, ...props.map((p) => `--property=${p}`)])).stdout;
    return Object.fromEntries(
      out
        .split('\n')
        .filter(Boolean)
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
  }

  /** The service's journal, as an operator reads it: `journalctl -u egress-natd -o cat`. */
  async journal(unit = 'egress-natd'): Promise<string[]> {
    return (await this.exec(['journalctl', '-u', unit, '-o', 'cat', '--no-pager'])).stdout.split('\n').filter(Boolean);
  }

  /** A file on the machine, written from outside (through its overlay). */
  async writeFile(path: string, text: string, mode = 0o644): Promise<void> {
    const file = join(this.root, path);
    await mkdir(join(file, '..'), { recursive: true });
    await writeFile(file, text, { mode });
    await chmod(file, mode);
  }

  readFile = (path: string): Promise<string> => readFile(join(this.root, path), 'utf8');

  /** Installs a package file with apt (its dependencies are on the machine, from Debian's archive). */
  async installDeb(deb: string): Promise<string> {
    await copyFile(deb, join(this.root, 'root', basename(deb)));
    const r = await this.exec(
      ['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'install', '-y', '-q', `/root/${basename(deb)}`],
      { timeoutMs: 180_000 },
    );
    return r.stdout + r.stderr;
  }

  /** `systemctl poweroff` on the machine; resolves once nspawn exited. */
  async poweroff(timeoutMs = 30_000): Promise<void> {
    await this.exec(['systemctl', 'poweroff', '--no-block'], { allowFail: true });
    await Promise.race([this.exited, sleep(timeoutMs)]);
    if (this.running) throw new Error(`${this.name} did not power off within ${timeoutMs} ms`);
  }

  /**
   * Ends the machine whatever its state: a clean poweroff (nspawn's SIGTERM), then SIGKILL to
   * its PID 1, found even if nspawn is gone (its PID 1 would outlive it), and known to be ours
   * by its root, our overlay.
   */
  async kill(): Promise<void> {
    if (this.running) {
      this.nspawn.kill('SIGTERM');
      await Promise.race([this.exited, sleep(20_000)]);
    }
    if (this.leader && (await readFile(`/proc/${this.leader}/mountinfo`, 'utf8').catch(() => '')).includes(this.root)) {
      // Killing PID 1 of the machine's PID namespace ends every process in it.
      await run(['kill', '-9', String(this.leader)], { allowFail: true });
    }
    if (this.running) {
      await Promise.race([this.exited, sleep(5_000)]);
      this.nspawn.kill('SIGKILL');
    }
  }
}

/** The children of `pid` (as listed by the kernel). */
async function childrenOf(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return text.split(/\s+/).filter(Boolean).map(Number);
}

const comm = (pid: number) =>
  readFile(`/proc/${pid}/comm`, 'utf8')
    .then((s) => s.trim())
    .catch(() => '');

/** The lab with machines as hosts; destroy() removes every machine, mount and namespace, also after failures. */
export class MachineLab {
  readonly machines = new Map<string, Machine>();
  private readonly mounts: string[] = [];
  private readonly attached: string[] = [];
  private readonly namespaces: string[] = [];

  private constructor(
    readonly lab: Lab,
    readonly hosts: readonly HostSpec[],
    private readonly log: (msg: string) => void,
  ) {}

  /** Machines with what the package `deb` depends on (see rootfs.ts); it is not installed. */
  static async create(
    deb: string,
    hosts = MACHINE_HOSTS,
    containers = MACHINE_CONTAINERS,
    log: (msg: string) => void = () => undefined,
  ): Promise<MachineLab> {
    const rootfs = await machineRootfs(await debDepends(deb), log);
    const ml = new MachineLab(await Lab.create([], []), hosts, log);
    try {
      // All settled before a failure is thrown: destroy() must see every machine that started.
      const boots = await Promise.allSettled(hosts.map((h) => ml.boot(h, rootfs)));
      for (const b of boots) if (b.status === 'rejected') throw b.reason;
      for (const c of containers) await ml.addContainer(c);
      return ml;
    } catch (e) {
      await ml.destroy();
      throw e;
    }
  }

  get id(): string {
    return this.lab.id;
  }

  machine(name: string): Machine {
    const m = this.machines.get(name);
    if (!m) throw new Error(`no machine ${name}`);
    return m;
  }

  private async boot(spec: HostSpec, rootfs: string): Promise<void> {
    const dir = join(this.lab.dir, 'machines', spec.name);
    const root = join(dir, 'root');
    for (const d of ['upper', 'work', 'root']) await mkdir(join(dir, d), { recursive: true });
    const layers = `lowerdir=${rootfs},upperdir=${dir}/upper,workdir=${dir}/work`;
    await run(['mount', '-t', 'overlay', 'overlay', '-o', layers, root]);
    this.mounts.push(root);
    await writeFile(join(root, 'etc/hostname'), `${spec.name}\n`); // the node name is the hostname
    const name = this.lab.ns(spec.name);
    const log = openSync(join(this.lab.dir, `nspawn-${spec.name}.log`), 'a');
    // In the bridge's namespace, so that --network-bridge finds br0 there and puts its end (vb-...) on it.
    // --register=no: no systemd-machined here (PID 1 of this machine need not be systemd).
    const nspawn = spawn(
      'nsenter',
      [
        `--net=/run/netns/${this.lab.ns('sw')}`,
        '--',
        'systemd-nspawn',
        '--register=no',
        '--keep-unit',
        `--directory=${root}`,
        `--machine=${name}`,
        '--boot',
        '--console=passive',
        '--network-bridge=br0',
      ],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    const m = new Machine(spec, root, nspawn);
    this.machines.set(spec.name, m);
    // nsenter execs nspawn (same pid); nspawn's child execs systemd, the machine's PID 1.
    const leader = await waitUntil(
      `${spec.name}'s systemd to start`,
      async () => {
        if (nspawn.exitCode !== null) throw new Error(`systemd-nspawn exited ${nspawn.exitCode}`);
        for (const pid of await childrenOf(nspawn.pid!)) if ((await comm(pid)) === 'systemd') return pid;
        return undefined;
      },
      30_000,
      50,
    );
    m.leader = leader;
    await run(['ip', 'netns', 'attach', name, String(leader)]);
    this.attached.push(name);
    await this.lab.sh(
      spec.name,
      `ip addr add ${spec.ip}/24 dev host0 && ip link set host0 up && ip route add default via ${ROUTER_IP}`,
    );
    let state = await this.booted(m);
    if (state === 'degraded') {
      // On this host (cgroup v1 with a unified hierarchy, a PID 1 that is not systemd, two busy
      // cores), about one machine boot in twenty loses an early unit (seen: systemd-tmpfiles-setup,
      // -sysctl, -remount-fs, -journal-flush, -user-sessions; "Failed to spawn executor"). Those
      // units are started once more, said in the log; a unit that fails again fails the boot.
      const failed = await this.failedUnits(m);
      this.log(`${spec.name}: ${failed.join(', ')} failed at boot; starting them again`);
      await m.exec(['systemctl', 'reset-failed'], { allowFail: true });
      await m.exec(['systemctl', 'restart', ...failed], { allowFail: true, timeoutMs: 60_000 });
      state = await this.booted(m);
    }
    if (state !== 'running') {
      const failed = await this.failedUnits(m);
      const why = await Promise.all(
        failed.map(async (u) => (await m.exec(['journalctl', '-b', '-o', 'cat', '-u', u], { allowFail: true })).stdout),
      );
      const consoleLog = await readFile(join(this.lab.dir, `nspawn-${spec.name}.log`), 'utf8').catch(() => '');
      throw new Error(
        `${spec.name} booted ${state}: ${failed.join(', ')}\n${why.join('\n')}\n${consoleLog.split('\n').slice(-40).join('\n')}`,
      );
    }
  }

  /** The machine's state once it booted: "running" once every unit started, "degraded" if one failed. */
  private booted(m: Machine): Promise<string> {
    // systemctl needs the bus up first.
    return waitUntil(
      `${m.name} to finish booting`,
      async () => {
        const r = await m.exec(['systemctl', 'is-system-running', '--wait'], { allowFail: true, timeoutMs: 90_000 });
        return r.stdout.trim() || undefined;
      },
      90_000,
      200,
    );
  }

  private async failedUnits(m: Machine): Promise<string[]> {
    const out = (await m.exec(['systemctl', '--failed', '--no-legend', '--plain'], { allowFail: true })).stdout;
    return out
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ')[0]!);
  }

  /** A workload network behind a machine: a namespace with a veth into the machine, routed by the router. */
  private async addContainer(c: ContainerSpec): Promise<void> {
    const ns = this.lab.ns(c.name);
    await run(['ip', 'netns', 'add', ns]);
    this.namespaces.push(ns);
    const hostIf = `v-${c.name}`;
    await run([
      'ip',
      'link',
      'add',
      'eth0',
      'netns',
      ns,
      'type',
      'veth',
      'peer',
      'name',
      hostIf,
      'netns',
      this.lab.ns(c.host),
    ]);
    const gw = c.ip.replace(/\.\d+$/, '.1');
    await this.lab.sh(
      c.host,
      `ip addr add ${gw}/24 dev ${hostIf} && ip link set ${hostIf} up && sysctl -qw net.ipv4.ip_forward=1`,
    );
    await this.lab.sh(
      c.name,
      `ip link set lo up && ip addr add ${c.ip}/24 dev eth0 && ip link set eth0 up && ip route add default via ${gw}`,
    );
    // A routed fleet, as in the lab: the router and every other machine reach it through its machine.
    const via = this.hosts.find((h) => h.name === c.host)!.ip;
    for (const other of ['r', ...this.hosts.filter((h) => h.name !== c.host).map((h) => h.name)])
      await this.lab.sh(other, `ip route add ${c.cidr} via ${via}`);
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.machines.values()].map((m) => m.kill()));
    for (const ns of this.attached.splice(0)) await run(['ip', 'netns', 'del', ns], { allowFail: true });
    for (const ns of this.namespaces.splice(0)) {
      const pids = (await run(['ip', 'netns', 'pids', ns], { allowFail: true })).stdout.split(/\s+/).filter(Boolean);
      if (pids.length) await run(['kill', '-9', ...pids], { allowFail: true });
      await run(['ip', 'netns', 'del', ns], { allowFail: true });
    }
    for (const root of this.mounts.splice(0).reverse()) {
      if ((await run(['umount', root], { allowFail: true })).code !== 0)
        await run(['umount', '-l', root], { allowFail: true });
    }
    for (const name of [...this.machines.keys()].map((n) => this.lab.ns(n))) {
      // nspawn cannot always remove its propagation directory when /run is not a tmpfs.
      const propagate = `/run/systemd/nspawn/propagate/${name}`;
      if (existsSync(propagate)) await rm(propagate, { recursive: true, force: true });
    }
    await this.lab.destroy();
  }
}
