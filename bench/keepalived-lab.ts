import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitUntil } from '../lab/cluster.js';
import { ECHO, net24, type Lab } from '../lab/lab.js';
import { nowNs } from '../lab/traffic.js';

// keepalived on the lab's hosts, doing the job egress-natd does for one floating IP, by
// hand: VRRPv3 elects the holder of the VIP; the VIP sits on eth0 (no virtual MAC, so a new
// master is found by gratuitous ARP alone); c1's host routes c1's traffic to the echo
// network via the VIP; every host SNATs what it forwards from c1 to the VIP (only the
// holder receives any). Everything lives in the lab's namespaces and its directory: config,
// pid files and logs. Only processes started here are signalled.

/** Like our election: the two workers first, then the control-plane node, the unlabelled host last. */
export const PRIORITY: Readonly<Record<string, number>> = { h1: 250, h2: 240, h3: 150, h4: 100 };
const VRID = 76;
const TABLE = 'keepalived_bench';

/** VRRPv3's Master_Down_Interval: 3 × advert + skew, skew = (256 − priority) × advert / 256 (RFC 5798, 6.1). */
export const masterDownMs = (advertMs: number, priority: number): number =>
  3 * advertMs + ((256 - priority) * advertMs) / 256;

export class KeepalivedLab {
  private readonly procs = new Map<string, ChildProcess>();

  constructor(
    readonly lab: Lab,
    readonly vip: string,
    readonly advertMs: number,
  ) {
    lab.onDestroy(() => {
      for (const p of this.procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    });
  }

  private file(host: string, kind: 'conf' | 'pid' | 'vrrp.pid' | 'log'): string {
    return join(this.lab.dir, `keepalived-${host}.${kind}`);
  }

  private config(host: string): string {
    return `global_defs {
  router_id ${host}
  vrrp_version 3
  script_user root
}
vrrp_instance shop {
  state BACKUP
  nopreempt
  interface eth0
  virtual_router_id ${VRID}
  priority ${PRIORITY[host] ?? 50}
  advert_int ${(this.advertMs / 1000).toFixed(2)}
  virtual_ipaddress {
    ${this.vip}/32 dev eth0
  }
}
`;
  }

  /** The data path by hand, then keepalived on every host. */
  async setUp(sourceCidr: string, clientHost: string): Promise<void> {
    const to = net24(ECHO.inPolicy);
    for (const h of this.lab.hosts) {
      const steer = h.name === clientHost ? [`ip route add ${to} via ${this.vip} dev eth0 onlink`] : [];
      // Only what arrives on eth0 from another host is SNATed: the client's host forwards c1's
      // packets out of eth0 too, and must leave their source alone.
      const nft = join(this.lab.dir, 'keepalived-snat.nft');
      writeFileSync(
        nft,
        `table ip ${TABLE} {
  chain post {
    type nat hook postrouting priority srcnat;
    iifname "eth0" oifname "eth0" ip saddr ${sourceCidr} ip daddr ${to} snat to ${this.vip}
  }
}
`,
      );
      await this.lab.sh(h.name, ['sysctl -qw net.ipv4.ip_forward=1', ...steer, `nft -f ${nft}`].join(' && '));
      writeFileSync(this.file(h.name, 'conf'), this.config(h.name));
    }
    await Promise.all(this.lab.hosts.map((h) => this.start(h.name)));
  }

  /** Starts keepalived (VRRP only, in the foreground) on `host`; resolves once it is BACKUP or MASTER. */
  async start(host: string): Promise<void> {
    const log = this.file(host, 'log');
    const from = sizeOf(log);
    const argv = [
      'keepalived',
      '--vrrp',
      '--dont-fork',
      '--log-console',
      '--log-detail',
      '--no-syslog',
      `--use-file=${this.file(host, 'conf')}`,
      `--pid=${this.file(host, 'pid')}`,
      `--vrrp_pid=${this.file(host, 'vrrp.pid')}`,
    ];
    const child = spawn(
      'ip',
      ['netns', 'exec', this.lab.ns(host), 'sh', '-c', `exec ${argv.join(' ')} >>${log} 2>&1`],
      {
        stdio: 'ignore',
      },
    );
    this.procs.set(host, child);
    await new Promise<void>((ok, fail) => {
      child.once('spawn', ok);
      child.once('error', fail);
    });
    await waitUntil(`keepalived on ${host} to take a state`, () =>
      Promise.resolve(/Entering (BACKUP|MASTER) STATE/.test(readFileSync(log, 'utf8').slice(from))),
    ).catch((e: Error) => {
      throw new Error(`${e.message}; its log:\n${readFileSync(log, 'utf8').slice(from).slice(-2000)}`);
    });
  }

  /** The unplanned fault of bench/cluster.ts: switch port down, then SIGKILL to keepalived (parent and VRRP child). */
  async cut(host: string): Promise<bigint> {
    await this.lab.setPort(host, false);
    const cut = nowNs();
    const parent = this.procs.get(host);
    const vrrp = Number(readFileSync(this.file(host, 'vrrp.pid'), 'utf8').trim());
    // The pid file is keepalived's own; make sure the pid is still the child this parent forked.
    const ppid = readFileSync(`/proc/${vrrp}/stat`, 'utf8').split(') ')[1]!.split(' ')[1];
    if (Number(ppid) !== parent!.pid) throw new Error(`keepalived on ${host}: ${vrrp} is not its VRRP child`);
    const exited = new Promise((r) => parent!.once('exit', r));
    parent!.kill('SIGKILL'); // the parent first, so it cannot respawn its child
    try {
      process.kill(vrrp, 'SIGKILL');
    } catch {
      /* the child went with its parent */
    }
    await exited;
    return cut;
  }

  /** A cut host back: its stale VIP removed (keepalived died without releasing it), port up, keepalived started. */
  async restore(host: string): Promise<void> {
    await this.lab.sh(host, `ip addr del ${this.vip}/32 dev eth0`, { allowFail: true });
    // keepalived takes a pid file whose process still shows in /proc (a killed child not yet
    // reaped) for a running daemon; these name the processes the cut killed.
    for (const kind of ['pid', 'vrrp.pid'] as const) rmSync(this.file(host, kind), { force: true });
    await this.lab.setPort(host, true);
    await this.start(host);
  }

  /** The one host that holds the VIP, once exactly one does. */
  async holder(): Promise<string> {
    return waitUntil('one keepalived master holding the VIP', async () => {
      const holders = await this.lab.holders(this.vip);
      return holders.length === 1 ? holders[0] : undefined;
    });
  }

  /** SIGTERM to every keepalived started here (each releases its VIP), then waits for them. */
  async stopAll(): Promise<void> {
    await Promise.all(
      [...this.procs.values()].map(async (p) => {
        if (p.exitCode !== null || p.signalCode !== null) return;
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }),
    );
  }
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}
