import type { z } from 'zod';
import {
  cidrContains,
  cidrRange,
  formatAddress,
  formatCidr,
  parseAddress,
  parseCidr,
  type Address,
  type Cidr,
} from '../util/ip.js';
import { intersects, overlappingOwners, subtract, unionOfCidrs } from '../util/intervals.js';
import type { Diagnostic } from './diagnostics.js';
import { MAX_FLOATING_IPS, policySourcesOn, selects, type Cluster, type Config, type Gateway, type Labels, type NodeSpec, type Policy, type PolicySource, type Workload } from './model.js';
import * as shape from './schema.js';
import type { ConfigSource, Path } from './source.js';

/** What the validator needs to know about the key file; reading it is the caller's job. */
export type KeyFileFacts =
  | { exists: false }
  | { exists: true; regular: boolean; mode: number; size: number };

export interface ValidateOptions {
  readonly keyFile: (path: string) => KeyFileFacts;
  readonly resolvePath: (path: string) => string;
  readonly digest: string;
}

const MIN_INTERVAL_MS = 10;
const MAX_INTERVAL_MS = 10_000;
export const DEFAULT_METRICS_PORT = 9607;
const IFNAME = /^[^\s/:]{1,15}$/;

const pathText = (path: Path): string =>
  path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

const article = (t: string): string =>
  ({ object: 'a mapping', record: 'a mapping', array: 'a list', string: 'a string', number: 'a number', boolean: 'a boolean' })[t] ?? t;

export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(text);
  if (!m) return undefined;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
}

/** Translates zod's structural issues into positioned messages. */
function shapeDiagnostics(src: ConfigSource, base: Path, issues: readonly z.core.$ZodIssue[]): Diagnostic[] {
  return issues.flatMap((issue): Diagnostic[] => {
    const path = [...base, ...(issue.path as (string | number)[])];
    const where = pathText(path);
    switch (issue.code) {
      case 'unrecognized_keys':
        return issue.keys.map((k) =>
          src.diag('error', [...path, k], `unknown key "${k}"${where ? ` in ${where}` : ''}`, 'key'),
        );
      case 'invalid_type':
        if (issue.input === undefined) {
          return [src.diag('error', path.slice(0, -1), `${pathText(path.slice(0, -1)) || 'the config'}: missing required key "${String(path[path.length - 1])}"`)];
        }
        return [src.diag('error', path, `${where} must be ${article(issue.expected)}, not ${describe(issue.input)}`)];
      case 'invalid_value':
        return [src.diag('error', path, `${where} must be ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, not ${describe(issue.input)}`)];
      case 'too_small':
        return [src.diag('error', path, `${where} needs at least ${String(issue.minimum)} entr${issue.minimum === 1 ? 'y' : 'ies'}`)];
      default:
        return [src.diag('error', path, `${where} ${issue.message}`)];
    }
  });
}

function withoutKey(value: unknown, path: readonly PropertyKey[], mappingKey: string): unknown {
  if (path.length === 0) {
    const { [mappingKey]: _, ...rest } = value as Record<string, unknown>;
    return rest;
  }
  const [head, ...tail] = path;
  const copy = (Array.isArray(value) ? [...value] : { ...(value as object) }) as Record<PropertyKey, unknown>;
  copy[head as string] = withoutKey(copy[head as string], tail, mappingKey);
  return copy;
}

/**
 * Parses one item's structure. Unknown keys are reported and then set aside, so that
 * a typo does not hide the item's other errors.
 */
function parseShape<T>(src: ConfigSource, schema: z.ZodType<T>, value: unknown, path: Path, out: Diagnostic[]): T | undefined {
  const r = schema.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  out.push(...shapeDiagnostics(src, path, r.error.issues));
  if (!r.error.issues.every((i) => i.code === 'unrecognized_keys')) return undefined;
  const cleaned = r.error.issues.reduce(
    (v, i) => (i.code === 'unrecognized_keys' ? i.keys.reduce((w, k) => withoutKey(w, i.path, k), v) : v),
    value,
  );
  const again = schema.safeParse(cleaned);
  return again.success ? again.data : undefined;
}

/** Validates a parsed document: structure first, then every rule of docs/design.md, "Config model". */
export function validate(src: ConfigSource, opts: ValidateOptions): { config?: Config; diagnostics: Diagnostic[] } {
  const out: Diagnostic[] = [...src.syntaxErrors];
  if (out.length) return { diagnostics: out };
  if (src.data === null || typeof src.data !== 'object' || Array.isArray(src.data)) {
    return { diagnostics: [src.diag('error', [], 'the config must be a mapping with version, cluster and nodes')] };
  }
  const top = parseShape(src, shape.topShape, src.data, [], out);
  const raw = src.data as Record<string, unknown>;
  const list = (k: string): unknown[] => (Array.isArray(raw[k]) ? (raw[k] as unknown[]) : []);

  const cluster = parseCluster(src, raw['cluster'], out, opts);
  const nodes = parseNodes(src, list('nodes'), cluster.interface, out);
  const gateways = parseGateways(src, list('gateways'), nodes, out);
  const workloads = parseWorkloads(src, list('workloads'), nodes, out);
  const policies = parsePolicies(src, list('policies'), gateways, workloads, out);

  if (!top || !cluster.value || out.some((d) => d.severity === 'error')) return { diagnostics: out };
  return {
    config: {
      file: src.file,
      digest: opts.digest,
      cluster: cluster.value,
      nodes,
      gateways: gateways.map((g) => g.value),
      workloads,
      policies,
    },
    diagnostics: out,
  };
}

function parseCluster(src: ConfigSource, value: unknown, out: Diagnostic[], opts: ValidateOptions): { value?: Cluster; interface?: string } {
  const c = parseShape(src, shape.clusterShape, value, ['cluster'], out);
  if (!c) {
    // Nodes still need the default interface, or one bad key would cascade into them.
    const ifname = (value as { interface?: unknown } | null)?.interface;
    return typeof ifname === 'string' ? { interface: ifname } : {};
  }
  const hb = c.heartbeat;
  const at = (k: string): Path => ['cluster', 'heartbeat', k];
  let ok = true;
  const fail = (path: Path, message: string) => {
    out.push(src.diag('error', path, message));
    ok = false;
  };
  if (c.interface !== undefined && !IFNAME.test(c.interface)) fail(['cluster', 'interface'], `cluster.interface "${c.interface}" is not a valid interface name`);
  const intervalMs = parseDuration(hb.interval);
  if (intervalMs === undefined) fail(at('interval'), `cluster.heartbeat.interval "${hb.interval}" is not a duration (e.g. 100ms, 2s)`);
  else if (intervalMs < MIN_INTERVAL_MS || intervalMs > MAX_INTERVAL_MS) fail(at('interval'), `cluster.heartbeat.interval must be between 10ms and 10s, not ${hb.interval}`);
  if (hb.missed < 2) fail(at('missed'), `cluster.heartbeat.missed must be at least 2, not ${hb.missed}`);
  if (hb.port < 1 || hb.port > 65535) fail(at('port'), `cluster.heartbeat.port must be between 1 and 65535, not ${hb.port}`);
  let group: Address | undefined;
  if (hb.transport === 'multicast') {
    if (hb.group === undefined) fail(['cluster', 'heartbeat'], 'cluster.heartbeat: multicast transport needs a group');
    else {
      const g = parseAddress(hb.group);
      if (!g.ok || g.value.family !== 4 || (g.value.value >> 28n) !== 0xen) fail(at('group'), `cluster.heartbeat.group "${hb.group}" is not an IPv4 multicast address (224.0.0.0/4)`);
      else group = g.value;
    }
  } else if (hb.group !== undefined) fail(at('group'), 'cluster.heartbeat.group is only used by the multicast transport');
  const keyFile = opts.resolvePath(hb.keyFile);
  const facts = opts.keyFile(keyFile);
  if (!facts.exists) fail(at('keyFile'), `key file ${keyFile} does not exist (create one with "egress-natd keygen ${keyFile}")`);
  else if (!facts.regular) fail(at('keyFile'), `key file ${keyFile} is not a regular file`);
  else {
    if ((facts.mode & 0o077) !== 0) fail(at('keyFile'), `key file ${keyFile} is readable by group or others (mode ${(facts.mode & 0o777).toString(8).padStart(4, '0')}); run "chmod 600 ${keyFile}"`);
    if (facts.size < 32) fail(at('keyFile'), `key file ${keyFile} holds ${facts.size} bytes; a cluster key needs at least 32`);
  }
  const metricsPort = c.metrics?.port ?? DEFAULT_METRICS_PORT;
  if (metricsPort < 1 || metricsPort > 65535) fail(['cluster', 'metrics', 'port'], `cluster.metrics.port must be between 1 and 65535, not ${metricsPort}`);
  if (!ok || intervalMs === undefined) return { interface: c.interface };
  return {
    interface: c.interface,
    value: {
      name: c.name,
      heartbeat: { intervalMs, missed: hb.missed, transport: hb.transport, ...(group ? { group } : {}), port: hb.port, keyFile },
      noGateway: c.noGateway,
      ...(c.metrics?.enabled === false ? {} : { metrics: { port: metricsPort } }),
    },
  };
}

/** Reports the second and later uses of a name, pointing back at the first. */
function uniqueNames(src: ConfigSource, kind: string, section: string, items: readonly unknown[], out: Diagnostic[]): Set<number> {
  const seen = new Map<string, number>();
  const dup = new Set<number>();
  items.forEach((item, i) => {
    const n = (item as { name?: unknown } | null)?.name;
    if (typeof n !== 'string') return;
    const first = seen.get(n);
    if (first === undefined) seen.set(n, i);
    else {
      out.push(src.diag('error', [section, i, 'name'], `duplicate ${kind} name "${n}" (first defined at ${src.where([section, first, 'name'])})`));
      dup.add(i);
    }
  });
  return dup;
}

function parseNodes(src: ConfigSource, items: unknown[], defaultIf: string | undefined, out: Diagnostic[]): NodeSpec[] {
  const dup = uniqueNames(src, 'node', 'nodes', items, out);
  const nodes: NodeSpec[] = [];
  const addresses = new Map<bigint, number>();
  items.forEach((item, i) => {
    const n = parseShape(src, shape.nodeShape, item, ['nodes', i], out);
    if (!n) return;
    const at = (k: string): Path => ['nodes', i, k];
    const c = parseCidr(n.address, true);
    let bad = dup.has(i);
    if (!c.ok) {
      out.push(src.diag('error', at('address'), `nodes[${i}].address: ${c.error}; expected the node's address with its prefix, e.g. 192.168.1.1/24`));
      bad = true;
    } else if (c.value.family !== 4) {
      out.push(src.diag('error', at('address'), `nodes[${i}].address: IPv6 is not supported by config version 1`));
      bad = true;
    } else {
      const first = addresses.get(c.value.address);
      if (first !== undefined) {
        out.push(src.diag('error', at('address'), `address ${formatAddress({ family: 4, value: c.value.address })} of node "${n.name}" is already the address of nodes[${first}]`));
        bad = true;
      } else addresses.set(c.value.address, i);
    }
    const ifname = n.interface ?? defaultIf;
    if (ifname === undefined) {
      out.push(src.diag('error', ['nodes', i], `node "${n.name}" has no interface: set cluster.interface or nodes[${i}].interface`));
      bad = true;
    } else if (!IFNAME.test(ifname)) {
      out.push(src.diag('error', at('interface'), `nodes[${i}].interface "${ifname}" is not a valid interface name`));
      bad = true;
    }
    // A node with a usable address is kept for cross-checks even when it has other
    // errors (the config is rejected anyway), so that one mistake does not cascade.
    if (!c.ok || c.value.family !== 4 || (bad && dup.has(i))) return;
    nodes.push({
      name: n.name,
      address: { family: c.value.family, value: c.value.address },
      subnet: { family: c.value.family, base: c.value.base, prefix: c.value.prefix },
      interface: ifname ?? '',
      role: n.role ?? 'worker',
      labels: n.labels ?? {},
    });
  });
  return nodes;
}

interface ParsedGateway {
  value: Gateway;
  index: number;
  /** Position of each floating IP in the file, to point at it from policies. */
  ipIndex: Map<bigint, number>;
}

function parseGateways(src: ConfigSource, items: unknown[], nodes: readonly NodeSpec[], out: Diagnostic[]): ParsedGateway[] {
  const dup = uniqueNames(src, 'gateway', 'gateways', items, out);
  const owners = new Map<bigint, string>();
  const result: ParsedGateway[] = [];
  let total = 0;
  items.forEach((item, i) => {
    const g = parseShape(src, shape.gatewayShape, item, ['gateways', i], out);
    if (!g) return;
    const admitted = nodes.filter((n) => selects(g.nodeSelector, n.labels));
    if (g.nodeSelector && admitted.length === 0) {
      out.push(src.diag('warning', ['gateways', i, 'nodeSelector'], `gateway "${g.name}": nodeSelector admits no node`));
    }
    const ips: Address[] = [];
    const ipIndex = new Map<bigint, number>();
    g.floatingIPs.forEach((text, j) => {
      const at: Path = ['gateways', i, 'floatingIPs', j];
      const a = parseAddress(text);
      if (!a.ok) return void out.push(src.diag('error', at, `gateways[${i}].floatingIPs: ${a.error}`));
      if (a.value.family !== 4) return void out.push(src.diag('error', at, `gateways[${i}].floatingIPs: IPv6 is not supported by config version 1`));
      const shown = formatAddress(a.value);
      const other = owners.get(a.value.value);
      if (other !== undefined) return void out.push(src.diag('error', at, `floating IP ${shown} is already a floating IP of gateway "${other}"; floating IPs must be unique`));
      owners.set(a.value.value, g.name);
      const node = nodes.find((n) => n.address.value === a.value.value);
      if (node) return void out.push(src.diag('error', at, `floating IP ${shown} is the address of node "${node.name}"`));
      const home = admitted.filter((n) => cidrContains(n.subnet, a.value));
      if (nodes.length === 0) return; // the missing nodes are the error; do not cascade
      if (home.length === 0) {
        return void out.push(src.diag('error', at, `floating IP ${shown} is not inside the subnet of any node that gateway "${g.name}" admits${admitted.length === 0 ? ' (its nodeSelector admits no node)' : ''}`));
      }
      const r = cidrRange(home[0]!.subnet);
      if (home[0]!.subnet.prefix < 31 && (a.value.value === r.start || a.value.value === r.end)) {
        return void out.push(src.diag('error', at, `floating IP ${shown} is the network or broadcast address of ${formatCidr(home[0]!.subnet)}`));
      }
      ipIndex.set(a.value.value, j);
      ips.push(a.value);
    });
    total += g.floatingIPs.length;
    if (total > MAX_FLOATING_IPS && total - g.floatingIPs.length <= MAX_FLOATING_IPS) {
      out.push(src.diag('error', ['gateways', i, 'floatingIPs'], `more than ${MAX_FLOATING_IPS} floating IPs in all gateways`));
    }
    if (dup.has(i)) return;
    result.push({ value: { name: g.name, floatingIPs: ips, ...(g.nodeSelector ? { nodeSelector: g.nodeSelector } : {}) }, index: i, ipIndex });
  });
  return result;
}

/** `field` names the field inside each entry that holds the CIDR (destinations: `cidr`). */
function parseCidrList(src: ConfigSource, texts: readonly string[], path: Path, out: Diagnostic[], field?: string): Cidr[] | undefined {
  const cidrs: Cidr[] = [];
  let ok = true;
  texts.forEach((t, j) => {
    const c = parseCidr(t);
    const msg = !c.ok ? c.error : c.value.family !== 4 ? `"${t}": IPv6 is not supported by config version 1` : undefined;
    if (msg || !c.ok) {
      out.push(src.diag('error', field ? [...path, j, field] : [...path, j], `${pathText(path)}: ${msg}`));
      ok = false;
    } else cidrs.push(c.value);
  });
  return ok ? cidrs : undefined;
}

function parseWorkloads(src: ConfigSource, items: unknown[], nodes: readonly NodeSpec[], out: Diagnostic[]): Workload[] {
  const dup = uniqueNames(src, 'workload', 'workloads', items, out);
  const result: Workload[] = [];
  items.forEach((item, i) => {
    const w = parseShape(src, shape.workloadShape, item, ['workloads', i], out);
    if (!w) return;
    const at = (k: string): Path => ['workloads', i, k];
    const cidrs = parseCidrList(src, w.cidrs ?? [], at('cidrs'), out);
    let ok = cidrs !== undefined && !dup.has(i);
    (w.cgroups ?? []).forEach((p, j) => {
      const problem = p.startsWith('/')
        ? 'must be relative to the cgroup2 root (drop the leading "/")'
        : p === '' || p.endsWith('/') || p.split('/').some((s) => s === '' || s === '.' || s === '..')
          ? 'is not a clean cgroup path (no empty, "." or ".." parts)'
          : undefined;
      if (problem) {
        out.push(src.diag('error', [...at('cgroups'), j], `workloads[${i}].cgroups: "${p}" ${problem}`));
        ok = false;
      }
    });
    if ((w.cidrs ?? []).length === 0 && (w.cgroups ?? []).length === 0) {
      out.push(src.diag('error', ['workloads', i, 'name'], `workload "${w.name}" has neither cidrs nor cgroups`));
      ok = false;
    }
    if (w.nodeSelector && !nodes.some((n) => selects(w.nodeSelector, n.labels))) {
      out.push(src.diag('warning', at('nodeSelector'), `workload "${w.name}": nodeSelector admits no node`));
    }
    // Kept even with errors (the config is rejected anyway) so selectors still find it.
    if (dup.has(i)) return;
    result.push({ name: w.name, labels: w.labels ?? {}, cidrs: ok && cidrs ? cidrs : [], cgroups: ok ? w.cgroups ?? [] : [], ...(w.nodeSelector ? { nodeSelector: w.nodeSelector } : {}) });
  });
  return result;
}

function parsePolicies(src: ConfigSource, items: unknown[], gateways: readonly ParsedGateway[], workloads: readonly Workload[], out: Diagnostic[]): Policy[] {
  const dup = uniqueNames(src, 'policy', 'policies', items, out);
  const result: { policy: Policy; index: number }[] = [];
  items.forEach((item, i) => {
    const p = parseShape(src, shape.policyShape, item, ['policies', i], out);
    if (!p) return;
    const at = (...k: (string | number)[]): Path => ['policies', i, ...k];
    let ok = !dup.has(i);
    const sources: PolicySource[] = [];
    p.sources.forEach((s, j) => {
      if ((s.workloadSelector === undefined) === (s.cidrs === undefined)) {
        out.push(src.diag('error', at('sources', j), `policies[${i}].sources[${j}] needs exactly one of workloadSelector or cidrs`));
        ok = false;
      } else if (s.workloadSelector) {
        const sel: Labels = s.workloadSelector.matchLabels;
        const names = workloads.filter((w) => selects(sel, w.labels)).map((w) => w.name);
        if (names.length === 0) out.push(src.diag('warning', at('sources', j, 'workloadSelector'), `policy "${p.name}": workloadSelector selects no workload`));
        sources.push({ kind: 'workloads', workloads: names });
      } else {
        const cidrs = parseCidrList(src, s.cidrs!, at('sources', j, 'cidrs'), out);
        if (cidrs) sources.push({ kind: 'cidrs', cidrs });
        else ok = false;
      }
    });
    const destinations = parseCidrList(src, p.destinations.map((d) => d.cidr), at('destinations'), out, 'cidr');
    const excluded = parseCidrList(src, (p.excludedDestinations ?? []).map((d) => d.cidr), at('excludedDestinations'), out, 'cidr');
    const gw = gateways.find((g) => g.value.name === p.gatewayRef);
    let egressIP: Address | undefined;
    if (!gw) {
      const known = gateways.map((g) => `"${g.value.name}"`).join(', ');
      out.push(src.diag('error', at('gatewayRef'), `policy "${p.name}" refers to unknown gateway "${p.gatewayRef}"${known ? ` (known: ${known})` : ' (no gateway is defined)'}`));
      ok = false;
    } else if (p.egressIP !== undefined) {
      const a = parseAddress(p.egressIP);
      if (!a.ok) out.push(src.diag('error', at('egressIP'), `policies[${i}].egressIP: ${a.error}`));
      else if (!gw.value.floatingIPs.some((f) => f.family === a.value.family && f.value === a.value.value)) {
        out.push(src.diag('error', at('egressIP'), `UnknownEgressIP: ${formatAddress(a.value)} is not one of the floating IPs of gateway "${gw.value.name}" (${gw.value.floatingIPs.map(formatAddress).join(', ') || 'none valid'})`));
      } else egressIP = a.value;
      ok &&= egressIP !== undefined;
    } else {
      egressIP = gw.value.floatingIPs[0];
      if (!egressIP) ok = false; // the gateway's floating IPs already carry the error
    }
    if (!ok || !destinations || !excluded || !gw || !egressIP) return;
    result.push({
      policy: { name: p.name, sources, destinations, excludedDestinations: excluded, gateway: gw.value.name, egressIP },
      index: i,
    });
  });
  warnOverlaps(src, result, workloads, out);
  return result.map((r) => r.policy);
}

/**
 * Warns where two policies match the same packets: the first in file order wins. Sources
 * count on every node at once, so two policies that meet on no single node may warn too.
 */
function warnOverlaps(src: ConfigSource, policies: readonly { policy: Policy; index: number }[], workloads: readonly Workload[], out: Diagnostic[]): void {
  const resolved = policies.map(({ policy }) => {
    const { cidrs, cgroups } = policySourcesOn({ workloads }, policy);
    return {
      sources: unionOfCidrs(cidrs),
      cgroups,
      destinations: subtract(unionOfCidrs(policy.destinations), unionOfCidrs(policy.excludedDestinations)),
    };
  });
  const sourcePairs = overlappingOwners(resolved.map((r) => r.sources));
  const cgroupOwners = new Map<string, number[]>();
  resolved.forEach((r, i) => r.cgroups.forEach((c) => cgroupOwners.set(c, [...(cgroupOwners.get(c) ?? []), i])));
  for (const [path, owners] of cgroupOwners) {
    const related = [...cgroupOwners].filter(([p]) => p === path || path.startsWith(`${p}/`)).flatMap(([, o]) => o);
    for (const a of owners) for (const b of related) if (a !== b) sourcePairs.add(a < b ? `${a},${b}` : `${b},${a}`);
  }
  const earlier = new Map<number, number[]>();
  for (const pair of sourcePairs) {
    const [a, b] = pair.split(',').map(Number) as [number, number];
    if (intersects(resolved[a]!.destinations, resolved[b]!.destinations)) earlier.set(b, [...(earlier.get(b) ?? []), a]);
  }
  for (const [b, as] of [...earlier].sort((x, y) => x[0] - y[0])) {
    const names = as.sort((x, y) => x - y).map((a) => `"${policies[a]!.policy.name}"`);
    const { policy, index } = policies[b]!;
    out.push(src.diag('warning', ['policies', index, 'name'], `policy "${policy.name}" overlaps ${names.join(', ')}: packets matched by both use the first in file order`));
  }
}

