import type { Logger } from 'pino';
import type { DesiredState, IpRoute, IpRule, Macvlan } from '../plan/desired.js';
import { isOurRulePref, isOurRouteTable, MACVLAN_PREFIX, MARK_MASK, RT_PROTOCOL } from '../plan/naming.js';
import { sendGratuitousArp } from './arp.js';
import { flushConnections } from './conntrack.js';
import { Netlink, type Link } from './netlink.js';
import { deleteTable, readTable, runTransaction, type ActualTable } from './nft.js';
import type { NftChange } from './nftdiff.js';
import type { AppliedPlan, StateStore } from './state.js';
import { readSysctl, writeSysctl } from './sysctl.js';
import { monotonicMs } from '../util/time.js';

// The only place that changes the host: read what the kernel has, compare with the
// plan, change what differs and nothing else.

/**
 * The plan without its nft table: the table's difference from the kernel's comes as an
 * NftChange, worked out where the plan was made (for a big config, on the planner's
 * thread: 100,000 set elements rendered as text on the daemon's loop held it for 0.5 s).
 */
export type HostPlan = Omit<DesiredState, 'nft'>;

const isOurRule = (r: { priority: number; protocol: number; table: number }): boolean =>
  r.protocol === RT_PROTOCOL && isOurRulePref(r.priority) && isOurRouteTable(r.table);
const isOurMacvlan = (l: Link): boolean => l.kind === 'macvlan' && l.name.startsWith(MACVLAN_PREFIX);

export interface ReconcileResult {
  /** One line per change made; empty when the host already matched the plan. */
  readonly changes: string[];
  /** Monotonic ms when the floating IPs taken were announced (what the take-over time counts to). */
  readonly announcedAt?: number;
}

export interface ReconcileOptions {
  readonly state: StateStore;
  readonly log: Logger;
  /** Skip gratuitous ARP (benchmarks); default false. */
  readonly noGarp?: boolean;
  /** Floating IPs to announce even if they were already in place (the daemon adopting them). */
  readonly announce?: ReadonlySet<string>;
  /** Our nft table as read already (apply reads it while it plans); read here when absent. */
  readonly table?: Promise<ActualTable>;
  /** Connection sync: installs the connections an IP's owner sent, before or after the IP's announcement (stateFirst); tries clashes again. */
  readonly connections?: ConnectionInstaller;
  /**
   * Asked for each floating IP whose connections tracked elsewhere are due to be flushed,
   * with the mark that names them: true leaves them (the caller flushes later, with
   * flushTrackedElsewhere). The daemon does so while another node still holds the IP: replies
   * that node still translates come on to this host, and with the connection's entry gone
   * such a reply would start one in the other direction, whose packets from the workload,
   * as replies, would pass unsteered (docs/datapath.md, "Order of changes", 5a). Asked at
   * the moment of the flush, so that a later step that fails loses nothing.
   */
  readonly deferFlush?: (t: TrackedElsewhere) => boolean;
  /**
   * Asked for each floating IP taken: true puts its synced connections in before the
   * announcement (the default), false after it. The daemon says false when no other node
   * holds the IP any more (a failover): the IP is dark until announced, and installing a
   * few thousand connections takes hundreds of milliseconds (the chaos soak saw 400 ms
   * added to a take-over), so they go in after it, and the reconcile does not wait for
   * them (nor does the next take-over). Meanwhile the owner drops, not answers, what
   * reaches the IP for no connection it tracks, so a server's segment is sent again
   * rather than reset.
   */
  readonly stateFirst?: (ip: string) => boolean;
}

export interface ConnectionInstaller {
  /** Installs the connections synced for `ips`; returns one line per change made. */
  install(ips: readonly string[]): Promise<string[]>;
  /** The same, after the announcement of `ips`, without waiting: it logs its own changes. */
  installSoon(ips: readonly string[]): void;
  /** Tries once more what clashed at `install`. */
  afterAnnounce(ips: readonly string[]): Promise<void>;
}

async function reconcileSysctls(desired: HostPlan, opts: ReconcileOptions, changes: string[]): Promise<void> {
  const state = await opts.state.load();
  const originals: Record<string, string> = { ...state.sysctls };
  const wanted = new Map(desired.sysctls.map((s) => [s.path, s.value]));
  const toSet: [string, string][] = [];
  for (const [path, value] of wanted) {
    const current = await readSysctl(path);
    if (current === undefined)
      throw new Error(`sysctl ${path.replaceAll('/', '.')} does not exist (is interface missing?)`);
    if (current !== value) {
      if (!(path in originals)) originals[path] = current;
      toSet.push([path, value]);
    }
  }
  const toRestore = Object.entries(originals).filter(([path]) => !wanted.has(path));
  for (const [path] of toRestore) delete originals[path];
  // Write-ahead: the original is on disk before the value changes.
  if (toSet.length) await opts.state.save({ ...state, sysctls: originals });
  for (const [path, value] of toSet) {
    await writeSysctl(path, value);
    changes.push(`set ${path.replaceAll('/', '.')}=${value}`);
  }
  for (const [path, value] of toRestore) {
    await writeSysctl(path, value).catch(() => undefined); // the interface may be gone
    changes.push(`restore ${path.replaceAll('/', '.')}=${value}`);
  }
  if (toRestore.length) await opts.state.save({ ...state, sysctls: originals });
}

/** Remembers the owners and mark indexes of `desired` before the kernel changes (what parking and the next start build on). */
async function recordPlan(desired: HostPlan, store: StateStore): Promise<void> {
  const applied: AppliedPlan = {
    node: desired.node,
    owners: Object.fromEntries(desired.egress.flatMap((e) => (e.owner ? [[e.ip, e.owner]] : []))),
    indexes: Object.fromEntries(desired.egress.map((e) => [e.ip, e.index])),
  };
  const state = await store.load();
  if (JSON.stringify(state.applied) !== JSON.stringify(applied)) await store.save({ ...state, applied });
}

/** Deletes every macvlan of egress-natd: the floating IPs leave this host. */
async function deleteMacvlans(nl: Netlink, changes: string[]): Promise<void> {
  for (const l of (await nl.links()).filter(isOurMacvlan)) {
    await nl.deleteLink(l.index, l.name);
    changes.push(`delete macvlan ${l.name}`);
  }
}

/** Deletes macvlans the plan does not want (first: no forwarding without SNAT). */
async function removeMacvlans(nl: Netlink, desired: HostPlan, changes: string[]): Promise<void> {
  const links = await nl.links();
  const byName = new Map(links.map((l) => [l.name, l]));
  const wanted = new Map(desired.macvlans.map((m) => [m.name, m]));
  for (const l of links.filter(isOurMacvlan)) {
    const m = wanted.get(l.name);
    const parent = m && byName.get(m.parent);
    if (!m || l.mac !== m.mac || !parent || l.parent !== parent.index) {
      await nl.deleteLink(l.index, l.name);
      changes.push(`delete macvlan ${l.name}`);
    }
  }
}

/** Adds the macvlans and addresses the plan wants (last: SNAT is in place before traffic can arrive). */
async function addMacvlans(nl: Netlink, desired: HostPlan, changes: string[]): Promise<Macvlan[]> {
  const links = await nl.links();
  const present = new Map(links.map((l) => [l.name, l]));
  const added: Macvlan[] = [];
  for (const m of desired.macvlans) {
    let link = present.get(m.name);
    if (!link) {
      const parent = present.get(m.parent);
      if (!parent) throw new Error(`interface ${m.parent} does not exist: cannot hold floating IP ${m.address}`);
      await nl.addMacvlan(m.name, parent.index, m.mac);
      changes.push(`add macvlan ${m.name} (${m.mac}) on ${m.parent}`);
      link = (await nl.links()).find((l) => l.name === m.name)!;
    }
    for (const s of m.sysctls) {
      if ((await readSysctl(s.path)) !== s.value) await writeSysctl(s.path, s.value);
    }
    if (!link.up) {
      await nl.setUp(link.index, m.name);
      changes.push(`set ${m.name} up`);
    }
    const addrs = (await nl.addresses()).filter((a) => a.index === link.index);
    for (const a of addrs.filter((a) => a.address !== m.address || a.prefix !== 32)) {
      await nl.deleteAddress(link.index, a.address, a.prefix);
      changes.push(`delete address ${a.address}/${a.prefix} from ${m.name}`);
    }
    if (!addrs.some((a) => a.address === m.address && a.prefix === 32)) {
      await nl.addAddress(link.index, m.address, 32);
      changes.push(`add address ${m.address}/32 to ${m.name}`);
      added.push(m);
    }
  }
  return added;
}

/**
 * The routing to have while the plan changes: every rule and route of the plan, and every
 * one of ours still there (a table keeps its current route). It goes in before nft moves
 * marks and the rest goes after, so a marked packet always finds its route.
 */
async function routingDuringChange(nl: Netlink, desired: HostPlan): Promise<HostPlan> {
  const links = await nl.links();
  const sameRule = (a: IpRule, b: IpRule) =>
    a.priority === b.priority && a.fwmark === b.fwmark && a.fwmask === b.fwmask && a.table === b.table;
  const rules: IpRule[] = [...desired.rules];
  for (const r of (await nl.rules()).filter(isOurRule)) if (!rules.some((w) => sameRule(w, r))) rules.push(r);
  const routes: IpRoute[] = [];
  for (const r of await nl.routes()) {
    const dev = links.find((l) => l.index === r.oif);
    if (isOurRouteTable(r.table) && r.dstLen === 0 && r.gateway && dev)
      routes.push({ table: r.table, gateway: r.gateway, dev: dev.name });
  }
  routes.push(...desired.routes.filter((w) => !routes.some((r) => r.table === w.table)));
  return { ...desired, rules, routes };
}

async function reconcileRouting(nl: Netlink, desired: HostPlan, changes: string[]): Promise<void> {
  const ruleKey = (r: { priority: number; fwmark: number; fwmask: number; table: number }) =>
    `${r.priority}/${r.fwmark}/${r.fwmask}/${r.table}`;
  const have = (await nl.rules()).filter(isOurRule);
  const wantRuleKeys = new Set(desired.rules.map(ruleKey));
  for (const r of have) {
    if (wantRuleKeys.has(ruleKey(r))) continue;
    await nl.deleteRule(r);
    changes.push(`delete ip rule pref ${r.priority}`);
  }
  const haveRuleKeys = new Set(have.map(ruleKey));
  for (const r of desired.rules) {
    if (haveRuleKeys.has(ruleKey(r))) continue;
    await nl.addRule(r, RT_PROTOCOL);
    changes.push(
      `add ip rule pref ${r.priority} fwmark 0x${r.fwmark.toString(16)}/0x${MARK_MASK.toString(16)} lookup ${r.table}`,
    );
  }
  const links = await nl.links();
  const routes = (await nl.routes()).filter((r) => isOurRouteTable(r.table));
  const wantRoutes = new Map(desired.routes.map((r) => [r.table, r]));
  for (const r of routes) {
    // A wanted table's default route is kept or replaced below; anything else goes,
    // whatever its destination (someone's `ip route add ... table N` included).
    if (wantRoutes.has(r.table) && r.dstLen === 0) continue;
    await nl.deleteRoute(r);
    changes.push(`delete route ${r.dst ?? 'default'}/${r.dstLen} table ${r.table}`);
  }
  for (const w of desired.routes) {
    const dev = links.find((l) => l.name === w.dev);
    if (!dev) throw new Error(`interface ${w.dev} does not exist: cannot route to ${w.gateway}`);
    const current = routes.find((r) => r.table === w.table && r.dstLen === 0);
    if (current && current.gateway === w.gateway && current.oif === dev.index) continue;
    await nl.replaceDefaultRoute(w.table, w.gateway, dev.index, RT_PROTOCOL);
    changes.push(`route table ${w.table}: default via ${w.gateway} dev ${w.dev} onlink`);
  }
}

/** A floating IP whose connections tracked elsewhere (their conntrack mark names it) are to be flushed, and its macvlan's parent. */
export interface TrackedElsewhere {
  readonly ip: string;
  readonly mark: number;
  readonly parent: string;
}

/**
 * Deletes the connections this host tracked for an IP while another host owned it, and
 * first what is still queued toward that host: packets steered to the IP while its address
 * did not resolve wait in the neighbour entry of the IP on the parent, and would leave once
 * it resolves, after the flush, to be translated by the old owner; the replies would then
 * find no connection here (docs/datapath.md, "Order of changes", 5a).
 */
export async function flushTrackedElsewhere(t: TrackedElsewhere, log: Logger, changes: string[]): Promise<void> {
  const nl = new Netlink();
  try {
    const parent = (await nl.links()).find((l) => l.name === t.parent);
    if (parent && (await nl.deleteNeighbor(parent.index, t.ip)))
      changes.push(`delete neighbour ${t.ip} on ${t.parent} (and what was queued for it)`);
  } catch (e) {
    log.warn({ err: (e as Error).message }, `neighbour ${t.ip} on ${t.parent} not deleted`);
  } finally {
    nl.close();
  }
  // Not fatal: without the flush the guard still holds; those connections only time out.
  await flushConnections(t.mark, MARK_MASK).then(
    () => changes.push(`flush connections tracked for ${t.ip} elsewhere (ct mark 0x${t.mark.toString(16)})`),
    (e: Error) => log.warn({ err: e.message }, `connections tracked for ${t.ip} elsewhere not flushed`),
  );
}

/** How our table as the kernel has it differs from the plan's: worked out where the plan's table is. */
export type NftChangeFor = (have: ActualTable) => NftChange | Promise<NftChange>;

export async function reconcile(
  desired: HostPlan,
  changeFor: NftChangeFor,
  opts: ReconcileOptions,
): Promise<ReconcileResult> {
  const changes: string[] = [];
  const nl = new Netlink();
  try {
    await recordPlan(desired, opts.state);
    await reconcileSysctls(desired, opts, changes);
    // Order matters for leaks (docs/datapath.md, "Order of changes"): at no step may a
    // selected packet leave un-SNATed. A macvlan forwards what reaches it, so it never
    // exists without its SNAT rule: macvlans go first and come last. A marked packet
    // needs its rule and route (or SNAT): routing is added before nft moves marks, and
    // what the plan no longer wants is removed after.
    await removeMacvlans(nl, desired, changes);
    await reconcileRouting(nl, await routingDuringChange(nl, desired), changes);
    // Read here, at this step: a broken nft must not keep the steps before (a macvlan
    // removed, say) from happening.
    const nft = await changeFor(await (opts.table ?? readTable()));
    // Two transactions (see nftdiff.ts): the new objects, then the switch to them.
    for (const text of [nft.staged, nft.commands]) if (text) await runTransaction(text);
    changes.push(...nft.summary.map((s) => `nft: ${s}`));
    const held = await heldOn(nl);
    const taking = desired.macvlans.map((m) => m.address).filter((ip) => !held.has(ip));
    // Connections tracked while another host owned these IPs are bound to no NAT; the
    // leak guard drops their packets, and without their entries the next packet of each
    // (a SYN retransmitted, say) starts again and is SNATed here (docs/datapath.md). Before
    // the synced entries go in and before the announcement: a synced connection of this
    // host's own workload has the same original tuple as the un-NATed entry it replaces,
    // and a server segment reaching the IP between the announcement and that entry's
    // replacement finds no NAT (all 10 server-push connections of the lab died so, reset by
    // this host's stack, before an owned IP dropped such segments). The nft switch above comes first: from it on, no new
    // connection gets the mark.
    const flushedFirst = (ip: string) => !held.has(ip) || !!opts.announce?.has(ip);
    const flush = async (ip: string) => {
      const t = {
        ip,
        mark: desired.egress.find((e) => e.ip === ip)!.mark,
        parent: desired.macvlans.find((m) => m.address === ip)!.parent,
      };
      if (!opts.deferFlush?.(t)) await flushTrackedElsewhere(t, opts.log, changes);
    };
    for (const m of desired.macvlans) if (flushedFirst(m.address)) await flush(m.address);
    // Make-before-break for state too: the connections the IP's owner tracked are in this
    // kernel before the IP is, while that owner still serves it (docs/datapath.md, "Order
    // of changes"). After a failover they follow the announcement (stateFirst).
    const stateFirst = taking.filter((ip) => opts.stateFirst?.(ip) ?? true);
    const stateAfter = taking.filter((ip) => !stateFirst.includes(ip));
    if (opts.connections && stateFirst.length) changes.push(...(await opts.connections.install(stateFirst)));
    const announced = await addMacvlans(nl, desired, changes);
    try {
      // Before the announcement: what other hosts steer here is marked by the relay guard's
      // lookups, and a table of ours still routing an IP this host just took (via the IP
      // itself, on the parent) would send it back out, ARPing for the IP: the old owner
      // answers, the switch learns the IP's MAC on its port again, and traffic goes there
      // until the next announcement (a 200 ms outage, seen on the machines lab).
      await reconcileRouting(nl, desired, changes);
      const extra = desired.macvlans.filter((m) => opts.announce?.has(m.address) && !announced.includes(m));
      if (!opts.noGarp) {
        for (const m of [...announced, ...extra]) {
          // Not awaited: the repeats go on while the daemon carries on (apply waits for them at exit).
          void sendGratuitousArp(m.name, m.address, (e) => opts.log.error({ err: e.message }, 'gratuitous ARP failed'));
          changes.push(`gratuitous ARP for ${m.address} on ${m.name}`);
        }
      }
    } finally {
      // After the announcement: queued earlier, the install's own work (encoding 100,000
      // entries) held the announcement up by a second. Queued also when a step above failed:
      // the retry finds the IPs held and takes nothing, and would lose them.
      if (opts.connections && stateAfter.length) opts.connections.installSoon(stateAfter);
    }
    const announcedAt = taking.length ? monotonicMs() : undefined;
    // An address re-added to a macvlan whose IP this host already held (a macvlan replaced
    // by hand, say) was not flushed above.
    for (const m of announced) if (!flushedFirst(m.address)) await flush(m.address);
    if (opts.connections && stateFirst.length) await opts.connections.afterAnnounce(stateFirst);
    for (const c of changes) opts.log.info({ change: c }, c);
    return { changes, ...(announcedAt === undefined ? {} : { announcedAt }) };
  } finally {
    nl.close();
  }
}

/** Floating IPs on egress-natd's macvlans now: what this host holds, whatever the plan said. */
export async function heldAddresses(): Promise<Set<string>> {
  const nl = new Netlink();
  try {
    return await heldOn(nl);
  } finally {
    nl.close();
  }
}

async function heldOn(nl: Netlink): Promise<Set<string>> {
  const ours = new Set((await nl.links()).filter(isOurMacvlan).map((l) => l.index));
  return new Set((await nl.addresses()).filter((a) => ours.has(a.index)).map((a) => a.address));
}

/** Removes the floating IPs (egress-natd's macvlans) and nothing else: the first step of parking a host. */
export async function releaseFloatingIPs(opts: ReconcileOptions): Promise<ReconcileResult> {
  const changes: string[] = [];
  const nl = new Netlink();
  try {
    await deleteMacvlans(nl, changes);
  } finally {
    nl.close();
  }
  for (const c of changes) opts.log.info({ change: c }, c);
  return { changes };
}

/**
 * Removes everything egress-natd installed and restores the sysctls it changed: the
 * uninstall. Macvlans first: without its SNAT a macvlan would forward what other hosts
 * steer to it with their workloads' addresses. Then this host's own selected traffic
 * leaves as if egress-natd had never been there: the user's choice.
 */
export async function release(opts: ReconcileOptions): Promise<ReconcileResult> {
  const changes: string[] = [];
  const nl = new Netlink();
  try {
    await deleteMacvlans(nl, changes);
    if (await deleteTable()) changes.push('nft: delete table inet egress_natd');
    for (const r of (await nl.rules()).filter(isOurRule)) {
      await nl.deleteRule(r);
      changes.push(`delete ip rule pref ${r.priority}`);
    }
    for (const table of new Set(
      (await nl.routes()).filter((r) => isOurRouteTable(r.table) && r.dstLen === 0).map((r) => r.table),
    )) {
      await nl.deleteDefaultRoute(table);
      changes.push(`delete route table ${table}`);
    }
    const state = await opts.state.load();
    for (const [path, value] of Object.entries(state.sysctls)) {
      await writeSysctl(path, value).catch(() => undefined);
      changes.push(`restore ${path.replaceAll('/', '.')}=${value}`);
    }
    await opts.state.clear();
  } finally {
    nl.close();
  }
  for (const c of changes) opts.log.info({ change: c }, c);
  return { changes };
}
