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
import { intersects, overlappingOwners, unionOfCidrs } from '../util/intervals.js';
import type { Diagnostic } from './diagnostics.js';
import { pathText, parseShape, uniqueNames } from './items.js';
import {
  MAX_FLOATING_IPS,
  policySourcesOn,
  reachedDestinations,
  selects,
  type Gateway,
  type Labels,
  type NodeSpec,
  type Policy,
  type PolicySource,
  type Workload,
} from './model.js';
import * as shape from './schema.js';
import type { ConfigSource, Path } from './source.js';
import { NFT_UNQUOTABLE, nftQuotable } from './kernel-names.js';

// The rules that relate gateways, workloads and policies to the nodes and to each other
// (docs/design.md, "Config model").

interface ParsedGateway {
  value: Gateway;
  index: number;
  /** Position of each floating IP in the file, to point at it from policies. */
  ipIndex: Map<bigint, number>;
}

export function parseGateways(
  src: ConfigSource,
  items: unknown[],
  nodes: readonly NodeSpec[],
  out: Diagnostic[],
): ParsedGateway[] {
  const dup = uniqueNames(src, 'gateway', 'gateways', items, out);
  const owners = new Map<bigint, string>();
  const result: ParsedGateway[] = [];
  let total = 0;
  items.forEach((item, i) => {
    const g = parseShape(src, shape.gatewayShape, item, ['gateways', i], out);
    if (!g) return;
    const admitted = nodes.filter((n) => selects(g.nodeSelector, n.labels));
    if (g.nodeSelector && admitted.length === 0) {
      out.push(
        src.diag('warning', ['gateways', i, 'nodeSelector'], `gateway "${g.name}": nodeSelector admits no node`),
      );
    }
    const ips: Address[] = [];
    const ipIndex = new Map<bigint, number>();
    g.floatingIPs.forEach((text, j) => {
      const at: Path = ['gateways', i, 'floatingIPs', j];
      const a = parseAddress(text);
      if (!a.ok) return void out.push(src.diag('error', at, `gateways[${i}].floatingIPs: ${a.error}`));
      if (a.value.family !== 4)
        return void out.push(
          src.diag('error', at, `gateways[${i}].floatingIPs: IPv6 is not supported by config version 1`),
        );
      const shown = formatAddress(a.value);
      const other = owners.get(a.value.value);
      if (other !== undefined)
        return void out.push(
          src.diag(
            'error',
            at,
            `floating IP ${shown} is already a floating IP of gateway "${other}"; floating IPs must be unique`,
          ),
        );
      owners.set(a.value.value, g.name);
      const node = nodes.find((n) => n.address.value === a.value.value);
      if (node)
        return void out.push(src.diag('error', at, `floating IP ${shown} is the address of node "${node.name}"`));
      const home = admitted.filter((n) => cidrContains(n.subnet, a.value));
      if (nodes.length === 0) return; // the missing nodes are the error; do not cascade
      if (home.length === 0) {
        return void out.push(
          src.diag(
            'error',
            at,
            `floating IP ${shown} is not inside the subnet of any node that gateway "${g.name}" admits${admitted.length === 0 ? ' (its nodeSelector admits no node)' : ''}`,
          ),
        );
      }
      const r = cidrRange(home[0]!.subnet);
      if (home[0]!.subnet.prefix < 31 && (a.value.value === r.start || a.value.value === r.end)) {
        return void out.push(
          src.diag(
            'error',
            at,
            `floating IP ${shown} is the network or broadcast address of ${formatCidr(home[0]!.subnet)}`,
          ),
        );
      }
      ipIndex.set(a.value.value, j);
      ips.push(a.value);
    });
    total += g.floatingIPs.length;
    if (total > MAX_FLOATING_IPS && total - g.floatingIPs.length <= MAX_FLOATING_IPS) {
      out.push(
        src.diag('error', ['gateways', i, 'floatingIPs'], `more than ${MAX_FLOATING_IPS} floating IPs in all gateways`),
      );
    }
    if (dup.has(i)) return;
    result.push({
      value: { name: g.name, floatingIPs: ips, ...(g.nodeSelector ? { nodeSelector: g.nodeSelector } : {}) },
      index: i,
      ipIndex,
    });
  });
  return result;
}

/** `field` names the field inside each entry that holds the CIDR (destinations: `cidr`). */
function parseCidrList(
  src: ConfigSource,
  texts: readonly string[],
  path: Path,
  out: Diagnostic[],
  field?: string,
): Cidr[] | undefined {
  const cidrs: Cidr[] = [];
  let ok = true;
  texts.forEach((t, j) => {
    const c = parseCidr(t);
    const msg = !c.ok
      ? c.error
      : c.value.family !== 4
        ? `"${t}": IPv6 is not supported by config version 1`
        : undefined;
    if (msg || !c.ok) {
      out.push(src.diag('error', field ? [...path, j, field] : [...path, j], `${pathText(path)}: ${msg}`));
      ok = false;
    } else cidrs.push(c.value);
  });
  return ok ? cidrs : undefined;
}

export function parseWorkloads(
  src: ConfigSource,
  items: unknown[],
  nodes: readonly NodeSpec[],
  out: Diagnostic[],
): Workload[] {
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
          : nftQuotable(p)
            ? undefined
            : NFT_UNQUOTABLE;
      if (problem) {
        out.push(src.diag('error', [...at('cgroups'), j], `workloads[${i}].cgroups: ${JSON.stringify(p)} ${problem}`));
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
    result.push({
      name: w.name,
      labels: w.labels ?? {},
      cidrs: ok && cidrs ? cidrs : [],
      cgroups: ok ? (w.cgroups ?? []) : [],
      ...(w.nodeSelector ? { nodeSelector: w.nodeSelector } : {}),
    });
  });
  return result;
}

export function parsePolicies(
  src: ConfigSource,
  items: unknown[],
  gateways: readonly ParsedGateway[],
  workloads: readonly Workload[],
  out: Diagnostic[],
): Policy[] {
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
        out.push(
          src.diag(
            'error',
            at('sources', j),
            `policies[${i}].sources[${j}] needs exactly one of workloadSelector or cidrs`,
          ),
        );
        ok = false;
      } else if (s.workloadSelector) {
        const sel: Labels = s.workloadSelector.matchLabels;
        const names = workloads.filter((w) => selects(sel, w.labels)).map((w) => w.name);
        if (names.length === 0)
          out.push(
            src.diag(
              'warning',
              at('sources', j, 'workloadSelector'),
              `policy "${p.name}": workloadSelector selects no workload`,
            ),
          );
        sources.push({ kind: 'workloads', workloads: names });
      } else {
        const cidrs = parseCidrList(src, s.cidrs!, at('sources', j, 'cidrs'), out);
        if (cidrs) sources.push({ kind: 'cidrs', cidrs });
        else ok = false;
      }
    });
    const destinations = parseCidrList(
      src,
      p.destinations.map((d) => d.cidr),
      at('destinations'),
      out,
      'cidr',
    );
    const excluded = parseCidrList(
      src,
      (p.excludedDestinations ?? []).map((d) => d.cidr),
      at('excludedDestinations'),
      out,
      'cidr',
    );
    const gw = gateways.find((g) => g.value.name === p.gatewayRef);
    let egressIP: Address | undefined;
    if (!gw) {
      const known = gateways.map((g) => `"${g.value.name}"`).join(', ');
      out.push(
        src.diag(
          'error',
          at('gatewayRef'),
          `policy "${p.name}" refers to unknown gateway "${p.gatewayRef}"${known ? ` (known: ${known})` : ' (no gateway is defined)'}`,
        ),
      );
      ok = false;
    } else if (p.egressIP !== undefined) {
      const a = parseAddress(p.egressIP);
      if (!a.ok) out.push(src.diag('error', at('egressIP'), `policies[${i}].egressIP: ${a.error}`));
      else if (!gw.value.floatingIPs.some((f) => f.family === a.value.family && f.value === a.value.value)) {
        out.push(
          src.diag(
            'error',
            at('egressIP'),
            `UnknownEgressIP: ${formatAddress(a.value)} is not one of the floating IPs of gateway "${gw.value.name}" (${gw.value.floatingIPs.map(formatAddress).join(', ') || 'none valid'})`,
          ),
        );
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
function warnOverlaps(
  src: ConfigSource,
  policies: readonly { policy: Policy; index: number }[],
  workloads: readonly Workload[],
  out: Diagnostic[],
): void {
  const resolved = policies.map(({ policy }) => {
    const { cidrs, cgroups } = policySourcesOn({ workloads }, policy);
    return {
      sources: unionOfCidrs(cidrs),
      cgroups,
      destinations: reachedDestinations(policy),
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
    if (intersects(resolved[a]!.destinations, resolved[b]!.destinations))
      earlier.set(b, [...(earlier.get(b) ?? []), a]);
  }
  for (const [b, as] of [...earlier].sort((x, y) => x[0] - y[0])) {
    const names = as.sort((x, y) => x - y).map((a) => `"${policies[a]!.policy.name}"`);
    const { policy, index } = policies[b]!;
    out.push(
      src.diag(
        'warning',
        ['policies', index, 'name'],
        `policy "${policy.name}" overlaps ${names.join(', ')}: packets matched by both use the first in file order`,
      ),
    );
  }
}
