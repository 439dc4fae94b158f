import { literalLookup } from '../cluster/transport.js';
import { createSocket, type Socket } from 'node:dgram';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { ClusterKeys } from '../config/key.js';
import type { Config, NodeSpec } from '../config/model.js';
import { SyncCache, SyncOutbox, toRecord } from '../cluster/sync-cache.js';
import {
  decodeSync,
  encodeSync,
  recordsThatFit,
  type SyncMessage,
  type SyncRecord,
  type SyncType,
} from '../cluster/sync-protocol.js';
import { parseEntry, PROTO_TCP, PROTO_UDP, snatEntry, type SyncedEntry } from '../dataplane/conntrack-entry.js';
import { streamSnatEntries } from '../dataplane/conntrack-dump.js';
import { IPS_ASSURED } from '../dataplane/ctnetlink.js';
import { subscribeConntrack, type ConntrackEvent, type ConntrackEvents } from '../dataplane/conntrack-events.js';
import { insertEntries } from '../dataplane/conntrack-insert.js';
import { candidates, floatingIPs } from '../plan/desired.js';
import { formatAddress } from '../util/ip.js';
import { monotonicMs } from '../util/time.js';

// Connection sync (README, "Connection survival"): the owner of a floating IP follows the
// kernel's conntrack events for the connections SNATed to it and sends them, batched, to
// the IP's other candidates; each candidate keeps them and installs them when it takes
// the IP (before announcing it in a handover; after a failover, once its address is up). The kernel work is in src/dataplane (conntrack-*.ts), the
// wire format and the caches in src/cluster (sync-*.ts); this file moves data between them.

/** Changes are sent at most this long after the kernel reported them. */
const FLUSH_MS = 100;
/** Every held IP's entries are sent in full this often (timeouts refreshed by traffic, lost datagrams). */
const SWEEP_MS = 10_000;
/** Datagrams sent between two pauses. */
const SEND_CHUNK = 32;
/** A peer is in sync if its last complete sweep of an IP is at most this old. */
const IN_SYNC_MS = 3 * SWEEP_MS;
const PEER_SWEEP_MS = 1_000;

export interface SyncSettings {
  readonly port: number;
  readonly protocols: readonly ('tcp' | 'udp')[];
}

export interface SyncStats {
  readonly port: number;
  /** Entries cached per floating IP this node may take. */
  readonly cached: Record<string, number>;
  /** Entries of the IPs this node owns, in its last sweep of each. */
  readonly sending: Record<string, number>;
  /** Peers that sent or were sent a complete sweep recently (this node's view), by name. */
  readonly peers: Record<string, { readonly lastHeardMsAgo: number | null; readonly inSync: boolean }>;
  readonly datagramsSent: number;
  readonly datagramsReceived: number;
  readonly dropped: Record<string, number>;
  readonly installed: number;
  readonly existing: number;
  readonly installFailed: number;
  readonly sendErrors: number;
  readonly eventsLost: number;
  /** How long the oldest change waited before the last flush sent it (ms). */
  readonly lagMs: number;
}

export interface SyncDeps {
  readonly config: () => Config;
  readonly self: () => NodeSpec;
  readonly keys: () => ClusterKeys;
  readonly incarnation: bigint;
  readonly log: Logger;
}

const PROTO_NUMBERS = { tcp: PROTO_TCP, udp: PROTO_UDP } as const;

export class ConnectionSync {
  private readonly cache = new SyncCache();
  private readonly outbox = new SyncOutbox();
  private held = new Set<string>();
  private events?: ConntrackEvents;
  private readonly timers: NodeJS.Timeout[] = [];
  private seq = 0n;
  private sweepId = 0;
  private sweeping: Promise<void> | undefined;
  private lastSweep = { at: -Infinity, ms: 0 };
  private peerSweep: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private sweepAgain = false;
  /** Entries that clashed with this host's own when an IP was taken: tried again after the flush. */
  private readonly clashed = new Map<string, SyncedEntry[]>();
  /** Last accepted (incarnation, seq) per peer, against replays. */
  private readonly lastSeq = new Map<string, { incarnation: bigint; seq: bigint }>();
  private readonly heard = new Map<string, number>();
  private readonly completeSweep = new Map<string, number>();
  private readonly lastResyncAsk = new Map<string, number>();
  private readonly sendingCount: Record<string, number> = {};
  private stats = {
    datagramsSent: 0,
    datagramsReceived: 0,
    installed: 0,
    existing: 0,
    installFailed: 0,
    sendErrors: 0,
    eventsLost: 0,
    lagMs: 0,
  };
  private readonly dropped: Record<string, number> = {};
  /** The installs that follow announcements (installSoon), one after another. */
  private installing: Promise<void> = Promise.resolve();
  /** IPs whose synced connections installSoon has yet to put in. */
  private readonly pendingInstall = new Set<string>();
  private closed = false;

  private constructor(
    private readonly deps: SyncDeps,
    private settings: SyncSettings,
    private readonly sock: Socket,
  ) {}

  static async open(deps: SyncDeps, settings: SyncSettings): Promise<ConnectionSync> {
    const address = formatAddress(deps.self().address);
    const sock = createSocket({ type: 'udp4', reuseAddr: false, recvBufferSize: 4 << 20, lookup: literalLookup });
    await new Promise<void>((ok, fail) => {
      sock.once('error', fail);
      sock.bind({ port: settings.port, address, exclusive: true }, () => {
        sock.off('error', fail);
        ok();
      });
    }).catch((e: Error) => {
      sock.close();
      throw new Error(`connection sync cannot bind ${address}:${settings.port}: ${e.message}`, { cause: e });
    });
    const s = new ConnectionSync(deps, settings, sock);
    sock.on('message', (m, r) => s.receive(m, r.address));
    sock.on('error', (e) => deps.log.warn({ err: e.message }, 'connection sync socket error'));
    try {
      s.events = await subscribeConntrack({
        events: (ev) => s.onEvents(ev),
        lost: (e) => {
          s.stats.eventsLost++;
          deps.log.warn({ err: e.message }, 'conntrack events lost: sweeping again');
          s.sweep();
        },
      });
    } catch (e) {
      s.close();
      throw new Error(`connection sync: ${(e as Error).message} (it needs the kernel's nf_conntrack_netlink)`, {
        cause: e,
      });
    }
    s.timers.push(setInterval(() => s.periodicSweep(), SWEEP_MS));
    s.timers.push(setInterval(() => s.cache.expire(monotonicMs()), SWEEP_MS));
    return s;
  }

  reconfigure(settings: SyncSettings): void {
    this.settings = settings;
  }

  close(): void {
    this.closed = true;
    this.pendingInstall.clear();
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.peerSweep);
    clearTimeout(this.flushTimer);
    this.events?.close();
    this.sock.close();
  }

  /** The other candidates of `ip`, by name and address. */
  private peersOf(ip: string): NodeSpec[] {
    const config = this.deps.config();
    const fip = floatingIPs(config).find((f) => f.text === ip);
    const self = this.deps.self().name;
    return fip ? candidates(config, fip).filter((n) => n.name !== self) : [];
  }

  /** After each reconcile: the IPs this node holds now. A new one is swept at once (its entries go to the remaining candidates). */
  setHeld(held: ReadonlySet<string>): void {
    const added = [...held].some((ip) => !this.held.has(ip));
    for (const ip of this.held) if (!held.has(ip)) delete this.sendingCount[ip];
    // An IP given up before its synced connections went in: they are not put in any more.
    for (const ip of this.pendingInstall) if (this.held.has(ip) && !held.has(ip)) this.pendingInstall.delete(ip);
    this.held = new Set(held);
    for (const ip of held) this.cache.drop(ip);
    if (added) this.sweep();
  }

  /**
   * A peer came up (or back): it gets every entry soon, not at the next sweep; at most one
   * such sweep every PEER_SWEEP_MS (on a loaded host peers may flap, and a sweep of many
   * entries on every flap would load it more).
   */
  peersChanged(): void {
    if (!this.held.size || this.peerSweep) return;
    this.peerSweep = setTimeout(() => {
      this.peerSweep = undefined;
      this.sweep();
    }, PEER_SWEEP_MS);
    this.peerSweep.unref();
  }

  /** Installs what the owner of `ips` sent (reconcile decides whether before or after their announcement). */
  async install(ips: readonly string[]): Promise<string[]> {
    const changes: string[] = [];
    for (const [ip, entries] of this.take(ips)) changes.push(await this.insert(ip, entries));
    return changes;
  }

  /**
   * Installs what the owner of `ips` sent, after their announcement, without holding up the
   * caller: the next take-over (another IP whose owner died) must not wait for it. The
   * entries are taken from the cache now (the cache of an IP this node holds is dropped
   * after the reconcile); they go in one IP at a time, in order, unless the IP was given up
   * meanwhile; the changes are logged when done. Until then sweeps leave these IPs out: a
   * sweep tells the candidates what the owner has, and they would forget the rest.
   */
  installSoon(ips: readonly string[]): void {
    const taken = this.take(ips);
    for (const ip of taken.keys()) this.pendingInstall.add(ip);
    this.installing = this.installing.then(async () => {
      for (const [ip, entries] of taken) {
        try {
          if (!this.pendingInstall.has(ip)) continue; // given up meanwhile
          const change = `${await this.insert(ip, entries)}, after the announcement`;
          this.deps.log.info({ change }, change);
          await this.afterAnnounce([ip]);
        } catch (e) {
          this.deps.log.warn({ ip, err: (e as Error).message }, 'synced connections not installed');
        } finally {
          this.pendingInstall.delete(ip);
        }
      }
      if (taken.size && !this.closed) this.sweep();
    });
  }

  /** The entries cached for each of `ips` that has any, taken out of the cache. */
  private take(ips: readonly string[]): Map<string, SyncedEntry[]> {
    const now = monotonicMs();
    const taken = new Map<string, SyncedEntry[]>();
    for (const ip of ips) {
      const entries = this.cache.take(ip, now);
      if (entries.length) taken.set(ip, entries);
    }
    return taken;
  }

  /** Inserts `entries` of `ip`; returns the change made, for the log. */
  private async insert(ip: string, entries: readonly SyncedEntry[]): Promise<string> {
    const started = monotonicMs();
    const r = await insertEntries(entries);
    const ms = Math.round(monotonicMs() - started);
    this.stats.installed += r.inserted;
    this.stats.installFailed += r.failed;
    if (r.existing.length) this.clashed.set(ip, r.existing);
    if (r.error) this.deps.log.warn({ ip, failed: r.failed, err: r.error }, 'some synced connections not installed');
    const replaced = r.replaced ? `, ${r.replaced} of them in place of older entries of the same connections` : '';
    const clash = r.existing.length ? `; ${r.existing.length} clash still, tried again after the announcement` : '';
    return `install ${r.inserted} synced connections for ${ip} in ${ms} ms${replaced}${clash}`;
  }

  /**
   * After the announcement: what clashed even after it was replaced (a packet of the same
   * connection made a new entry in between) is tried once more.
   */
  async afterAnnounce(ips: readonly string[]): Promise<void> {
    for (const ip of ips) {
      const entries = this.clashed.get(ip);
      this.clashed.delete(ip);
      if (!entries) continue;
      const r = await insertEntries(entries);
      this.stats.installed += r.inserted;
      this.stats.existing += r.existing.length;
      this.stats.installFailed += r.failed;
    }
  }

  /**
   * Only assured connections are synced (TCP: established; UDP: traffic both ways for 2 s,
   * the kernel's own test of what matters). The others are handshakes and one-shot
   * request/answer flows: at 500 new ones a second they made a cache of 15,000 entries whose
   * install added 124 ms to the failover p99, for connections that are over anyway (or
   * start again with their next packet).
   */
  private wanted(e: SyncedEntry | undefined): e is SyncedEntry {
    return !!e && (e.status & IPS_ASSURED) !== 0 && this.settings.protocols.some((p) => PROTO_NUMBERS[p] === e.proto);
  }

  private onEvents(events: ConntrackEvent[]): void {
    if (!this.held.size) return;
    const now = monotonicMs();
    for (const ev of events) {
      const e = snatEntry(ev.entry, this.held);
      if (this.wanted(e)) this.outbox.add(e.natIp, toRecord(e, ev.kind === 'destroy' ? 'delete' : 'upsert'), now);
    }
    // Changes wait at most FLUSH_MS and go in batches; an idle daemon is not woken to find none.
    if (this.outbox.size && !this.flushTimer) this.flushTimer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  private flush(): void {
    this.flushTimer = undefined;
    if (!this.outbox.size) return;
    const oldest = this.outbox.oldest;
    for (const [ip, records] of this.outbox.take()) void this.sendRecords(ip, records, 0);
    if (oldest !== undefined) this.stats.lagMs = monotonicMs() - oldest;
  }

  private nextSeq(): bigint {
    return ++this.seq;
  }

  private message(type: SyncType, ip: string, sweep: number, records: readonly SyncRecord[], total = 0): Buffer {
    const m: SyncMessage = {
      type,
      cluster: this.deps.config().cluster.name,
      node: this.deps.self().name,
      incarnation: this.deps.incarnation,
      seq: this.nextSeq(),
      sweep,
      ip,
      records,
      total,
    };
    return encodeSync(m, this.deps.keys()[0]!);
  }

  private sendTo(peers: readonly NodeSpec[], datagram: Buffer): void {
    for (const p of peers) {
      this.stats.datagramsSent++;
      this.sock.send(datagram, this.settings.port, formatAddress(p.address), (e) => e && this.stats.sendErrors++);
    }
  }

  private async sendRecords(ip: string, records: readonly SyncRecord[], sweep: number): Promise<void> {
    const peers = this.peersOf(ip);
    if (!peers.length) return;
    const per = recordsThatFit(this.deps.config().cluster.name, this.deps.self().name);
    for (let i = 0, n = 0; i < records.length; i += per, n++) {
      this.sendTo(peers, this.message('entries', ip, sweep, records.slice(i, i + per)));
      // Paced: a burst of thousands of datagrams would overflow the peers' receive buffers.
      if (n % SEND_CHUNK === SEND_CHUNK - 1) await sleep(1);
    }
    if (sweep) this.sendTo(peers, this.message('sweep-end', ip, sweep, [], records.length));
  }

  /** Sends every entry of every held IP (one sweep at a time; a request meanwhile runs another after it). */
  sweep(): void {
    if (this.sweeping) {
      this.sweepAgain = true;
      return;
    }
    this.sweeping = this.runSweep()
      .catch((e: Error) => this.deps.log.warn({ err: e.message }, 'connection sync sweep failed'))
      .finally(() => {
        this.sweeping = undefined;
        if (this.sweepAgain) {
          this.sweepAgain = false;
          this.sweep();
        }
      });
  }

  private async runSweep(): Promise<void> {
    const started = monotonicMs();
    // One walk of the table for every held IP that has another candidate to send to: a walk
    // costs 10 ms however little it finds, and an IP only this node may hold needs none.
    const held = new Set([...this.held].filter((ip) => this.peersOf(ip).length && !this.pendingInstall.has(ip)));
    const byIp = new Map([...held].map((ip) => [ip, [] as SyncRecord[]]));
    if (held.size)
      await streamSnatEntries((payload) => {
        const parsed = parseEntry(payload);
        const e = parsed && snatEntry(parsed, held);
        if (this.wanted(e)) byIp.get(e.natIp)!.push(toRecord(e));
      });
    for (const [ip, records] of byIp) {
      if (!this.held.has(ip)) continue;
      this.sweepId = (this.sweepId % 0xfffffffe) + 1;
      this.sendingCount[ip] = records.length;
      await this.sendRecords(ip, records, this.sweepId);
      const now = monotonicMs();
      for (const p of this.peersOf(ip)) this.completeSweep.set(p.name, now);
    }
    this.lastSweep = { at: monotonicMs(), ms: monotonicMs() - started };
  }

  /**
   * The periodic sweep, every SWEEP_MS, or less often when sweeps are long (many
   * connections): a sweep's work stays under about 2 % of the time.
   */
  private periodicSweep(): void {
    const { at, ms } = this.lastSweep;
    if (monotonicMs() - at >= Math.max(SWEEP_MS, 50 * ms) - FLUSH_MS) this.sweep();
  }

  private drop(reason: string): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
  }

  /** A datagram from the sync port: checked (cluster, MAC, node, source, replay), then applied. Never throws. */
  private receive(datagram: Buffer, source: string): void {
    const d = decodeSync(datagram, this.deps.keys(), this.deps.config().cluster.name);
    if (!d.ok) return this.drop(d.reason);
    const m = d.msg;
    const config = this.deps.config();
    const sender = config.nodes.find((n) => n.name === m.node);
    if (!sender || sender.name === this.deps.self().name) return this.drop('unknown-node');
    if (formatAddress(sender.address) !== source) return this.drop('wrong-source');
    const last = this.lastSeq.get(m.node);
    if (last && (m.incarnation < last.incarnation || (m.incarnation === last.incarnation && m.seq <= last.seq)))
      return this.drop('replay');
    const gap = !!last && m.incarnation === last.incarnation && m.seq !== last.seq + 1n;
    this.lastSeq.set(m.node, { incarnation: m.incarnation, seq: m.seq });
    const now = monotonicMs();
    this.stats.datagramsReceived++;
    this.heard.set(m.node, now);
    // Only about an IP both nodes are candidates of.
    const peers = this.peersOf(m.ip);
    if (!peers.some((p) => p.name === m.node)) return this.drop('not-a-candidate');
    if (m.type === 'resync') {
      if (this.held.has(m.ip)) this.sweep();
      return;
    }
    if (this.held.has(m.ip)) return; // this node owns it now: its kernel has the connections
    if (m.type === 'entries') this.cache.apply(m.ip, m.records, m.sweep, now);
    else if (this.cache.endSweep(m.ip, m.sweep, m.total)) this.completeSweep.set(m.node, now);
    // A datagram went missing (the counter jumped): ask for a full sweep, at most once a second per IP.
    if (gap && now - (this.lastResyncAsk.get(m.ip) ?? -Infinity) > 1000) {
      this.lastResyncAsk.set(m.ip, now);
      this.sendTo([sender], this.message('resync', m.ip, 0, []));
    }
  }

  snapshot(): SyncStats {
    const now = monotonicMs();
    const config = this.deps.config();
    const self = this.deps.self().name;
    const peers: SyncStats['peers'] = {};
    for (const n of config.nodes) {
      if (n.name === self) continue;
      const heard = this.heard.get(n.name);
      const complete = this.completeSweep.get(n.name);
      peers[n.name] = {
        lastHeardMsAgo: heard === undefined ? null : Math.round(now - heard),
        inSync: complete !== undefined && now - complete < IN_SYNC_MS,
      };
    }
    return {
      port: this.settings.port,
      cached: this.cache.sizes(),
      sending: { ...this.sendingCount },
      peers,
      ...this.stats,
      dropped: { ...this.dropped },
    };
  }
}
