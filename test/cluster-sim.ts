import { loadConfigText } from '../src/config/load.js';
import type { Config } from '../src/config/model.js';
import { ClusterNode } from '../src/cluster/node.js';
import { candidates, floatingIPs } from '../src/plan/desired.js';
import { formatAddress } from '../src/util/ip.js';
import { fakeKeyFile } from './helpers.js';

// A deterministic simulation of a cluster (like MetalLB's speaker tests): in-memory
// nodes run the daemon's ClusterNode, exchange real encoded, authenticated heartbeats
// over a lossy network on a fake clock, and apply their decisions to a fake kernel.
// Faults: message drops, partitions and heals, carrier loss, kill -9; planned events:
// drain, undrain, SIGTERM, start. After every step of the clock it checks:
//  - at most one holder per IP among nodes that hear each other, except an overlap
//    bounded by one heartbeat interval (make-before-break, or a conflict being settled);
//  - every IP held while an eligible candidate is up: no gap at all after a planned
//    event, and none longer than the failover bound after an unplanned one.

//
// SIM_TRACE=1 SIM_SEED=N SIM_FROM=ms SIM_TO=ms prints every decision in that window, to
// follow a failing seed.

const TICK = 5;
const INTERVAL = 100;
const MISSED = 3;
const DOWN_AFTER = INTERVAL * MISSED;
const START_LISTEN = 2000;
const STOP_GRACE = 100;
const LATENCY = TICK;
/** An unplanned fault may leave an IP unheld for detection plus the heartbeat that was in flight. */
const FAILOVER_BOUND = DOWN_AFTER + INTERVAL + 2 * TICK;
/** Two nodes that hear each other may both hold an IP for one interval (and the message's way). */
const OVERLAP_BOUND = INTERVAL + 2 * TICK;
export const KEY = Buffer.alloc(32, 7);
export const NAMES = ['n1', 'n2', 'n3', 'n4'];
export const FIPS = ['192.168.1.100', '192.168.1.101', '192.168.1.102'];

function simConfig(): Config {
  const text = `version: 1
cluster:
  name: sim
  interface: eth0
  heartbeat: { interval: ${INTERVAL}ms, missed: ${MISSED}, transport: multicast, group: 239.255.76.67, port: 7607, keyFile: good.key }
  noGateway: drop
nodes:
${NAMES.map((n, i) => `  - { name: ${n}, address: 192.168.1.${i + 1}/24, role: ${i === 3 ? 'control-plane' : 'worker'} }`).join('\n')}
gateways:
  - { name: g, floatingIPs: [${FIPS.join(', ')}] }
workloads: []
policies:
  - { name: p, sources: [{ cidrs: [10.0.0.0/8] }], destinations: [{ cidr: 0.0.0.0/0 }], action: SNAT, gatewayRef: g }
`;
  const r = loadConfigText('sim.yaml', text, fakeKeyFile);
  if (!r.config) throw new Error(JSON.stringify(r.diagnostics));
  return r.config;
}

interface Datagram {
  readonly from: string;
  readonly to: string;
  readonly bytes: Buffer;
  readonly at: number;
}

/** One host: the daemon's control flow around a ClusterNode, with a kernel that applies at once. */
export class SimHost {
  node?: ClusterNode;
  kernel = new Set<string>();
  carrier = true;
  private incarnation = 1n;
  private applying = false;
  private listenUntil?: number;
  private nextBeat = 0;
  private dirty = false;
  private wakeAt?: number;
  private stopUntil?: number;
  /** The cluster keys this host runs with (its key file): the first signs. */
  keys: Buffer[] = [KEY];

  constructor(
    readonly name: string,
    readonly address: string,
    private readonly sim: Sim,
  ) {}

  get running(): boolean {
    return this.node !== undefined;
  }

  get stopping(): boolean {
    return this.stopUntil !== undefined;
  }

  /** What the election calls eligible, from the outside: running, listened, carrier, not draining or leaving. */
  get eligible(): boolean {
    return this.node?.eligible() ?? false;
  }

  start(now: number): void {
    this.node = new ClusterNode(this.sim.config, this.name, this.keys, this.incarnation++);
    this.node.setCondition({ carrier: this.carrier });
    this.applying = !this.carrier;
    this.listenUntil = this.carrier ? now + Math.max(DOWN_AFTER, START_LISTEN) : undefined;
    this.nextBeat = now;
    this.dirty = !this.carrier;
  }

  /** kill -9, then systemd's ExecStopPost release. */
  crash(): void {
    this.node = undefined;
    this.kernel.clear();
    this.stopUntil = undefined;
    this.wakeAt = undefined;
  }

  /** SIGTERM: LEAVING at once, hand over (bounded), release, exit. */
  stop(now: number): void {
    if (!this.node || this.stopping) return;
    this.node.setCondition({ leaving: true });
    for (let i = 0; i < 3; i++) this.beat(now);
    this.stopUntil = now + DOWN_AFTER + STOP_GRACE;
    this.dirty = true;
  }

  drain(now: number, draining: boolean): void {
    if (!this.node || this.stopping) return;
    this.node.setCondition({ draining });
    this.beat(now);
    this.dirty = true;
  }

  setCarrier(now: number, carrier: boolean): void {
    this.carrier = carrier;
    this.sim.linkChanged(this.name);
    if (!this.node || this.stopping) return;
    this.node.setCondition({ carrier, listened: false });
    this.listenUntil = carrier ? now + DOWN_AFTER : undefined;
    this.beat(now);
    this.dirty = true;
  }

  /** A new key file and a reload (SIGHUP). */
  setKeys(keys: Buffer[]): void {
    this.keys = keys;
    this.node?.reconfigure(this.sim.config, keys);
  }

  receive(d: Datagram, now: number): void {
    if (!this.node) return;
    const r = this.node.receive(d.bytes, d.from, now);
    if (!r.accepted && !(r.reason === 'bad-mac' && this.sim.keysDiffer))
      throw new Error(`${this.name} dropped a heartbeat from ${d.from}: ${r.reason}`);
    if (!r.accepted) this.sim.stats.authFailures++;
    if (r.changed) this.dirty = true;
  }

  private beat(now: number): void {
    if (this.node) this.sim.broadcast(this, this.node.heartbeat(), now);
  }

  step(now: number): void {
    const node = this.node;
    if (!node) return;
    if (now >= this.nextBeat) {
      this.beat(now);
      this.nextBeat = now + INTERVAL;
    }
    if (!this.stopping && node.expire(now).changed) this.dirty = true;
    if (this.listenUntil !== undefined && now >= this.listenUntil) {
      this.listenUntil = undefined;
      node.setCondition({ listened: true });
      this.applying = true;
      this.beat(now);
      this.dirty = true;
    }
    if (this.wakeAt !== undefined && now > this.wakeAt) this.dirty = true;
    if (this.dirty && (this.applying || this.stopping)) {
      this.dirty = false;
      const d = node.decide(now);
      if (process.env['SIM_TRACE'] && now > Number(process.env['SIM_FROM']) && now < Number(process.env['SIM_TO']))
        console.error(
          now,
          this.name,
          JSON.stringify({
            cond: node.condition,
            owners: [...d.election.owners],
            reasons: [...d.election.reasons],
            hold: [...d.hold],
            nodes: node.nodes().map((n) => [n.name, n.up, n.eligible, n.holds.join(',')]),
          }),
        );
      this.wakeAt = d.wakeAt;
      for (const ip of d.hold.keys()) {
        const fip = floatingIPs(this.sim.config).find((f) => f.text === ip)!;
        if (!candidates(this.sim.config, fip).some((n) => n.name === this.name))
          throw new Error(`${this.name} holds ${ip} but is no candidate`);
      }
      this.kernel = new Set(d.hold.keys());
      if (node.applied(this.kernel, d)) this.beat(now);
    }
    if (this.stopUntil !== undefined && (this.kernel.size === 0 || now >= this.stopUntil)) this.crash();
  }
}

interface Violation {
  readonly at: number;
  readonly what: string;
}

export class Sim {
  readonly config = simConfig();
  readonly hosts: SimHost[];
  now = 0;
  private queue: Datagram[] = [];
  /** Pairs "a b" that cannot reach each other (both ways). */
  private readonly cut = new Set<string>();
  /** Last time the link between a pair lost a message or was cut ("a b" sorted). */
  private readonly disturbed = new Map<string, number>();
  dropRate = 0;
  /** Hosts run with different keys: a heartbeat that fails authentication is expected, not a bug. */
  keysDiffer = false;
  /** Times of unplanned faults (crash, partition, carrier loss, drops that may time a node out). */
  private readonly unplanned: number[] = [];
  private readonly overlapSince = new Map<string, number>();
  private readonly gapSince = new Map<string, number>();
  readonly violations: Violation[] = [];
  readonly stats = { maxGapUnplanned: 0, maxOverlap: 0, heartbeats: 0, drops: 0, authFailures: 0 };

  constructor(private readonly rand: () => number) {
    this.hosts = this.config.nodes.map((n) => new SimHost(n.name, formatAddress(n.address), this));
  }

  private pair(a: string, b: string): string {
    return a < b ? `${a} ${b}` : `${b} ${a}`;
  }

  host(name: string): SimHost {
    return this.hosts.find((h) => h.name === name)!;
  }

  broadcast(from: SimHost, bytes: Buffer, now: number): void {
    for (const to of this.hosts) {
      if (to === from) continue;
      this.stats.heartbeats++;
      const p = this.pair(from.name, to.name);
      if (!from.carrier || !to.carrier || this.cut.has(p)) continue;
      if (this.rand() < this.dropRate) {
        this.stats.drops++;
        this.fault();
        this.disturbed.set(p, now);
        continue;
      }
      this.queue.push({ from: from.address, to: to.name, bytes, at: now + LATENCY });
    }
  }

  /** Since when a and b hear each other without a lost message; undefined while they cannot. */
  private connectedSince(a: SimHost, b: SimHost): number | undefined {
    const p = this.pair(a.name, b.name);
    return a.carrier && b.carrier && !this.cut.has(p) ? (this.disturbed.get(p) ?? -Infinity) : undefined;
  }

  /** Notes an unplanned fault now: IPs it leaves unheld may stay so for the failover bound. */
  fault(): void {
    if (this.unplanned[this.unplanned.length - 1] !== this.now) this.unplanned.push(this.now);
  }

  /** Whether an unplanned fault happened in the failover bound before `since`. */
  private faultBefore(since: number): boolean {
    for (let i = this.unplanned.length - 1; i >= 0; i--) {
      const at = this.unplanned[i]!;
      if (at < since - DOWN_AFTER - INTERVAL) return false;
      if (at <= since) return true;
    }
    return false;
  }

  /** A new partition replaces the previous one: every pair whose reachability changes is disturbed now. */
  partition(groups: string[][]): void {
    this.fault();
    this.setCut((a, b) => !groups.some((g) => g.includes(a) && g.includes(b)));
  }

  heal(): void {
    this.setCut(() => false);
  }

  private setCut(cut: (a: string, b: string) => boolean): void {
    for (const a of NAMES) {
      for (const b of NAMES) {
        const p = this.pair(a, b);
        if (a >= b || cut(a, b) === this.cut.has(p)) continue;
        if (cut(a, b)) this.cut.add(p);
        else this.cut.delete(p);
        this.disturbed.set(p, this.now);
      }
    }
  }

  /** A host's carrier changed: every link of it is disturbed now. */
  linkChanged(name: string): void {
    for (const other of NAMES) if (other !== name) this.disturbed.set(this.pair(name, other), this.now);
  }

  run(ms: number): void {
    for (const end = this.now + ms; this.now < end; this.now += TICK) {
      const due = this.queue.filter((d) => d.at <= this.now);
      this.queue = this.queue.filter((d) => d.at > this.now);
      for (const d of due) this.host(d.to).receive(d, this.now);
      for (const h of this.hosts) h.step(this.now);
      this.check();
    }
  }

  private check(): void {
    const now = this.now;
    for (const ip of FIPS) {
      const holders = this.hosts.filter((h) => h.running && h.kernel.has(ip));
      for (const a of holders) {
        for (const b of holders) {
          if (a.name >= b.name) continue;
          const k = `${ip} ${a.name} ${b.name}`;
          const since = this.overlapSince.get(k) ?? now;
          this.overlapSince.set(k, since);
          // Counted only while they hear each other, from when they last started to.
          const heard = this.connectedSince(a, b);
          if (heard === undefined) continue;
          const overlap = now - Math.max(since, heard);
          this.stats.maxOverlap = Math.max(this.stats.maxOverlap, overlap);
          if (overlap > OVERLAP_BOUND)
            this.violations.push({
              at: now,
              what: `${ip} held by ${a.name} and ${b.name}, who hear each other, for ${overlap} ms`,
            });
        }
      }
      for (const k of [...this.overlapSince.keys()]) {
        const [kip, a, b] = k.split(' ');
        if (kip === ip && !(holders.some((h) => h.name === a) && holders.some((h) => h.name === b)))
          this.overlapSince.delete(k);
      }
      const someoneCould = this.hosts.some((h) => h.eligible);
      if (holders.length || !someoneCould || this.waitsForJoiningNode(ip)) {
        this.gapSince.delete(ip);
        continue;
      }
      const since = this.gapSince.get(ip) ?? now;
      this.gapSince.set(ip, since);
      const gap = now - since;
      const unplanned = this.faultBefore(since);
      if (unplanned) this.stats.maxGapUnplanned = Math.max(this.stats.maxGapUnplanned, gap);
      // After a planned event not a single step may go unheld; after a fault, the failover bound.
      if (!unplanned || gap > FAILOVER_BOUND)
        this.violations.push({
          at: now,
          what: `${ip} unheld for ${gap} ms while ${this.hosts
            .filter((h) => h.eligible)
            .map((h) => h.name)
            .join(', ')} could hold it${unplanned ? ' (after an unplanned fault)' : ' (planned)'}`,
        });
    }
  }

  /**
   * A cold-started cluster spreads its IPs: the election gives some to nodes still
   * listening, and they wait for them (at most the listening time).
   */
  private waitsForJoiningNode(ip: string): boolean {
    const joining = (name: string | undefined) => {
      const h = this.hosts.find((x) => x.name === name);
      return h?.node !== undefined && h.carrier && !h.node.condition.listened && !h.stopping;
    };
    return this.hosts.some((h) => h.eligible && joining(h.node!.owners.get(ip)));
  }

  holdersOf(ip: string): string[] {
    return this.hosts.filter((h) => h.running && h.kernel.has(ip)).map((h) => h.name);
  }
}
