import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, lstat, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import type { Counters } from '../src/daemon/telemetry.js';
import type { FailoverRecord } from '../src/daemon/history.js';
import type { Status } from '../src/daemon/status.js';
import type { PortPressure } from '../src/daemon/snat-ports.js';
import type { Traffic } from '../src/daemon/traffic.js';
import { BIN, DAEMON_NODE_FLAGS, labScript, NO_TEST_RUNNER_HOOKS, NODE } from './paths.js';

// The lab (docs/design.md, "Lab"): network namespaces as hosts on a Linux bridge, a router
// namespace with an echo server that answers with the source IP it sees. The bridge
// lives in a namespace of its own, so the machine's own interfaces are never touched.
// Every name carries a random id; destroy() removes everything, also after failures.

const exec = promisify(execFile);

export const SUBNET_PREFIX = '192.168.1';
export const ROUTER_IP = `${SUBNET_PREFIX}.254`;
/** Echo server addresses on the router: policy destinations, an excluded one, and another. */
export const ECHO = { inPolicy: '203.0.113.10', excluded: '203.0.113.11', other: '198.51.100.10' } as const;
export const ECHO_PORT = 7;
export const FIPS = [`${SUBNET_PREFIX}.100`, `${SUBNET_PREFIX}.101`] as const;

export interface HostSpec {
  readonly name: string;
  readonly ip: string;
  readonly labels?: Record<string, string>;
  readonly role?: string;
}
export interface ContainerSpec {
  readonly name: string;
  readonly host: string;
  readonly cidr: string;
  readonly ip: string;
}

export const DEFAULT_HOSTS: HostSpec[] = [
  { name: 'h1', ip: `${SUBNET_PREFIX}.1`, labels: { 'node-type': 'egressNat' } },
  { name: 'h2', ip: `${SUBNET_PREFIX}.2`, labels: { 'node-type': 'egressNat' } },
  { name: 'h3', ip: `${SUBNET_PREFIX}.3`, labels: { 'node-type': 'egressNat' } },
];
export const DEFAULT_CONTAINERS: ContainerSpec[] = [
  { name: 'c1', host: 'h1', cidr: '10.10.1.0/24', ip: '10.10.1.2' },
  { name: 'c2', host: 'h3', cidr: '10.10.2.0/24', ip: '10.10.2.2' },
];

/** The daemon's answer to `status`: the product's status, with its counters and readiness. */
export type DaemonStatus = Status & {
  readonly ready: boolean;
  readonly counters: Counters;
  readonly history: readonly FailoverRecord[];
  readonly traffic: Traffic | null;
  readonly snatPorts: Readonly<Record<string, PortPressure>> | null;
};

/** `a.b.c.0/24` for an address `a.b.c.d`. */
export const net24 = (ip: string): string => `${ip.replace(/\.\d+$/, '.0')}/24`;

/** Single-quotes `s` for sh. */
const q = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;

/** `ip netns exec` remounts /sys without the cgroup2 hierarchy; lab scripts mount it again (and run without tap's hooks). */
const MOUNT_CGROUP = `${NO_TEST_RUNNER_HOOKS} mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null;`;

/** Calls `fn` with every complete line `stream` yields. */
export function eachLine(stream: Readable, fn: (line: string) => void): void {
  let buf = '';
  stream.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const l of lines) fn(l);
  });
}

export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly code: number | string | undefined,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`${argv.join(' ')} exited ${code}: ${stderr.trim() || stdout.trim()}`);
  }
}

export async function run(
  argv: string[],
  opts: { allowFail?: boolean; timeoutMs?: number } = {},
): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await exec(argv[0]!, argv.slice(1), {
      maxBuffer: 256 * 1024 * 1024,
      timeout: opts.timeoutMs ?? 120_000,
    });
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const x = e as { code?: number | string; stdout?: string; stderr?: string };
    const code = typeof x.code === 'number' ? x.code : 1;
    if (opts.allowFail) return { stdout: x.stdout ?? '', stderr: x.stderr ?? '', code };
    throw new CommandError(argv, x.code, x.stdout ?? '', x.stderr ?? '');
  }
}

export class Lab {
  readonly id = `en${randomBytes(3).toString('hex')}`;
  readonly hosts: HostSpec[];
  readonly containers: ContainerSpec[];
  readonly cgroup: string;
  dir = '';
  private echo?: ChildProcess;
  /** egress-natd daemons this lab started, by host. */
  readonly daemons = new Map<string, ChildProcess>();
  private readonly namespaces: string[] = [];

  private constructor(hosts: HostSpec[], containers: ContainerSpec[]) {
    this.hosts = hosts;
    this.containers = containers;
    this.cgroup = `${this.id}/shop.service`;
  }

  ns(name: string): string {
    return `${this.id}-${name}`;
  }

  /** Builds the topology; on any failure it removes what it built and rethrows. */
  static async create(hosts = DEFAULT_HOSTS, containers = DEFAULT_CONTAINERS): Promise<Lab> {
    const lab = new Lab(hosts, containers);
    try {
      await lab.build();
      return lab;
    } catch (e) {
      await lab.destroy();
      throw e;
    }
  }

  private async addNs(name: string): Promise<string> {
    const ns = this.ns(name);
    await run(['ip', 'netns', 'add', ns]);
    this.namespaces.push(ns);
    await this.sh(name, 'ip link set lo up');
    return ns;
  }

  private async build(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `${this.id}-`));
    await this.addNs('sw');
    await this.sh('sw', 'ip link add br0 type bridge && ip link set br0 up');
    await this.attach('r');
    const routes = this.containers.map((c) => `ip route add ${c.cidr} via ${this.host(c.host).ip}`);
    await this.sh(
      'r',
      [
        `ip addr add ${ROUTER_IP}/24 dev eth0`,
        ...Object.values(ECHO).map((ip) => `ip addr add ${ip}/32 dev lo`),
        'sysctl -qw net.ipv4.ip_forward=1',
        ...routes,
      ].join(' && '),
    );
    for (const h of this.hosts) {
      await this.attach(h.name, h.ip);
      const own = this.containers.filter((c) => c.host === h.name);
      // A routed fleet: every host reaches every container network through its host.
      const fleet = this.containers
        .filter((c) => c.host !== h.name)
        .map((c) => `ip route add ${c.cidr} via ${this.host(c.host).ip}`);
      await this.sh(
        h.name,
        [
          `ip route add default via ${ROUTER_IP}`,
          ...(own.length ? ['sysctl -qw net.ipv4.ip_forward=1'] : []),
          ...fleet,
        ].join(' && '),
      );
    }
    for (const c of this.containers) {
      const ns = await this.addNs(c.name);
      const hostIf = `v-${c.name}`;
      const hostNs = this.ns(c.host);
      await run(['ip', 'link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', hostIf, 'netns', hostNs]);
      const gw = c.ip.replace(/\.\d+$/, '.1');
      await this.sh(c.host, `ip addr add ${gw}/24 dev ${hostIf} && ip link set ${hostIf} up`);
      await this.sh(c.name, `ip addr add ${c.ip}/24 dev eth0 && ip link set eth0 up && ip route add default via ${gw}`);
    }
    await this.startEcho();
    await writeFile(join(this.dir, 'cluster.key'), randomBytes(32).toString('hex'), { mode: 0o600 });
  }

  /** A namespace on the segment (eth0, a veth to port p-<name> on the bridge), with `ip`/24 if given. */
  private async attach(name: string, ip?: string): Promise<void> {
    const [ns, sw] = [await this.addNs(name), this.ns('sw')];
    await run(['ip', 'link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', `p-${name}`, 'netns', sw]);
    await this.sh('sw', `ip link set p-${name} master br0 && ip link set p-${name} up`);
    await this.sh(name, `ip link set eth0 up${ip ? ` && ip addr add ${ip}/24 dev eth0` : ''}`);
  }

  /** A stranger: a namespace on the segment with `ip`/24 that is neither a node nor a workload. */
  addStranger = (name: string, ip: string): Promise<void> => this.attach(name, ip);

  host(name: string): HostSpec {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`no host ${name} in the lab`);
    return h;
  }

  /** Runs a shell script in a lab namespace, with the cgroup2 hierarchy mounted (policies select local processes by cgroup). */
  sh(name: string, script: string, opts: { allowFail?: boolean; timeoutMs?: number } = {}) {
    return run(['ip', 'netns', 'exec', this.ns(name), 'sh', '-c', `${MOUNT_CGROUP} ${script}`], opts);
  }

  /** The environment of egress-natd in a lab host (a prefix for a shell command): a state dir and an incarnation file per host, since all namespaces share /run and /var. */
  stateEnv(host: string): string {
    return `EGRESS_NATD_STATE_DIR=${q(join(this.dir, `state-${host}`))} EGRESS_NATD_INCARNATION_FILE=${q(this.incarnationFile(host))}`;
  }

  /** Where the daemon of `host` keeps its last incarnation. */
  incarnationFile(host: string): string {
    return join(this.dir, `var-${host}`, 'incarnation');
  }

  /** egress-natd in a lab host. */
  egress(host: string, args: string[], opts: { allowFail?: boolean } = {}) {
    return this.sh(host, `${this.stateEnv(host)} ${q(BIN)} ${args.map(q).join(' ')}`, opts);
  }

  /**
   * Starts `egress-natd run` in a lab host; `env` is added to its environment (NOTIFY_SOCKET, ...).
   * Its JSON log goes to daemon-<host>.log in the lab dir. Its pid is the daemon's (exec all the way).
   */
  async startDaemon(
    host: string,
    config: string,
    extra: string[] = [],
    env: Readonly<Record<string, string>> = {},
    /** Options for Node itself (e.g. --trace-gc, which NODE_OPTIONS does not take). */
    nodeFlags: readonly string[] = [],
  ): Promise<ChildProcess> {
    const old = this.daemons.get(host);
    if (old && old.exitCode === null && old.signalCode === null) throw new Error(`a daemon already runs on ${host}`);
    const logFile = this.daemonLog(host);
    const vars = Object.entries(env)
      .map(([k, v]) => `${k}=${q(v)}`)
      .join(' ');
    const script = `${MOUNT_CGROUP} ${vars} ${this.stateEnv(host)} exec ${q(process.execPath)} ${[...DAEMON_NODE_FLAGS, ...nodeFlags].map(q).join(' ')} ${q(BIN)} run -c ${q(config)} -n ${host} ${extra.map(q).join(' ')} >>${q(logFile)} 2>&1`;
    const child = spawn('ip', ['netns', 'exec', this.ns(host), 'sh', '-c', script], { stdio: 'ignore' });
    this.daemons.set(host, child);
    await new Promise<void>((ok, fail) => {
      child.once('spawn', ok);
      child.once('error', fail);
    });
    return child;
  }

  /** The log file of the daemon of `host`. */
  daemonLog(host: string): string {
    return join(this.dir, `daemon-${host}.log`);
  }

  /** Sends a signal (SIGHUP: reload) to the daemon of `host`, which must be running. */
  signalDaemon(host: string, signal: NodeJS.Signals): void {
    const child = this.daemons.get(host);
    if (!child || child.exitCode !== null || child.signalCode !== null) throw new Error(`no daemon runs on ${host}`);
    child.kill(signal);
  }

  /** Signals a daemon this lab started and waits for it to exit. */
  async stopDaemon(host: string, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<number | null> {
    const child = this.daemons.get(host);
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill(signal);
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const code = await exited;
    clearTimeout(t);
    return code;
  }

  /** What systemd runs after the daemon of `host` ended, however it did (ExecStopPost in systemd/egress-natd.service). */
  stopPost(host: string, config: string) {
    return this.egress(host, ['release', '--keep-steering', '-c', config, '-n', host]);
  }

  /** What systemd does after a daemon died (ExecStopPost, then a start), with the host back on the segment. */
  async restartDaemon(host: string, config: string): Promise<void> {
    await this.stopPost(host, config);
    await this.setPort(host, true);
    await this.startDaemon(host, config);
  }

  /** Takes a host off the segment (its switch port down), or puts it back. */
  async setPort(host: string, up: boolean): Promise<void> {
    await this.sh('sw', `ip link set p-${host} ${up ? 'up' : 'down'}`);
  }

  /** `status -o json` from a host's daemon. */
  async status(host: string): Promise<DaemonStatus> {
    return JSON.parse((await this.egress(host, ['status', '-o', 'json'])).stdout) as DaemonStatus;
  }

  /** Hosts whose kernel holds `ip` (on an egress-natd macvlan). */
  async holders(ip: string): Promise<string[]> {
    const out = await Promise.all(
      this.hosts.map(async (h) =>
        (await this.sh(h.name, `ip -o -4 addr show to ${ip}/32`, { allowFail: true })).stdout.includes(ip)
          ? h.name
          : '',
      ),
    );
    return out.filter(Boolean);
  }

  private async startEcho(): Promise<void> {
    this.echo = spawn('ip', ['netns', 'exec', this.ns('r'), ...NODE, labScript('echo-server'), String(ECHO_PORT)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.seen = [];
    eachLine(this.echo.stdout!, (l) => {
      if (l.startsWith('seen ')) this.seen.push(l.slice(5));
    });
    await new Promise<void>((ok, fail) => {
      const t = setTimeout(() => fail(new Error('echo server did not start')), 10_000);
      this.echo!.stdout!.once('data', () => {
        clearTimeout(t);
        ok();
      });
      this.echo!.once('exit', (code) => {
        clearTimeout(t);
        fail(new Error(`echo server exited ${code}`));
      });
    });
  }

  /** Source addresses the echo server has seen, oldest first. */
  seen: string[] = [];

  /**
   * Connects from a lab namespace to the echo server; returns the source IP it saw, or
   * undefined when nothing came back in time. `cgroup` runs the client in the lab's cgroup.
   */
  async probe(
    from: string,
    dest: string,
    opts: { cgroup?: boolean; timeoutS?: number } = {},
  ): Promise<string | undefined> {
    const enter = opts.cgroup
      ? `mkdir -p /sys/fs/cgroup/${this.cgroup} && echo $$ > /sys/fs/cgroup/${this.cgroup}/cgroup.procs && `
      : '';
    const t = opts.timeoutS ?? 2;
    const r = await this.sh(
      from,
      `${enter}timeout ${t} bash -c 'exec 3<>/dev/tcp/${dest}/${ECHO_PORT} && head -n1 <&3'`,
      { allowFail: true },
    );
    const ip = r.stdout.trim();
    return r.code === 0 && ip ? ip : undefined;
  }

  /** The cgroup the lab's local workload runs in (made on first use). */
  async makeCgroup(host: string): Promise<void> {
    await this.sh(host, `mkdir -p /sys/fs/cgroup/${this.cgroup}`);
  }

  private readonly cleanups: (() => void)[] = [];
  /** Runs `fn` when the lab is destroyed (processes a helper started outside the namespaces' pids). */
  onDestroy(fn: () => void): void {
    this.cleanups.push(fn);
  }

  async destroy(): Promise<void> {
    for (const fn of this.cleanups.splice(0)) fn();
    if (this.echo && this.echo.exitCode === null) {
      this.echo.kill('SIGTERM');
      await new Promise((r) => {
        this.echo!.once('exit', r);
        setTimeout(r, 2000);
      });
    }
    for (const ns of [...this.namespaces].reverse()) {
      // Only processes inside our own namespaces: they are ours.
      const pids = (await run(['ip', 'netns', 'pids', ns], { allowFail: true })).stdout.split(/\s+/).filter(Boolean);
      if (pids.length) await run(['kill', '-9', ...pids], { allowFail: true });
      await run(['ip', 'netns', 'del', ns], { allowFail: true });
    }
    this.namespaces.length = 0;
    await removeCgroup(this.id);
    // LAB_KEEP=DIR keeps a copy of the lab's files (daemon logs, configs) in DIR/<lab id>, for a post-mortem.
    const keep = process.env['LAB_KEEP'];
    // Control sockets are skipped: fs.cp refuses them, and would stop copying at the first.
    const notSocket = async (src: string) => !(await lstat(src)).isSocket();
    if (keep && this.dir)
      await cp(this.dir, join(keep, this.id), { recursive: true, filter: notSocket }).catch(() => undefined);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

/** Removes the lab's cgroup subtree (in the one cgroup2 hierarchy, wherever the host mounts it). */
async function removeCgroup(id: string): Promise<void> {
  const script = `d=$(mktemp -d) && mount -t cgroup2 none "$d" && { [ -d "$d/${id}" ] && find "$d/${id}" -depth -type d -exec rmdir {} + ; umount "$d"; rmdir "$d"; }`;
  await run(['unshare', '-m', 'sh', '-c', script], { allowFail: true });
}
