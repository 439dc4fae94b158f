import { formatAddress, parseAddress, parseCidr, type Address } from '../util/ip.js';
import type { Diagnostic } from './diagnostics.js';
import { parseShape, uniqueNames } from './items.js';
import type { Cluster, Config, NodeSpec } from './model.js';
import * as shape from './schema.js';
import { parseGateways, parsePolicies, parseWorkloads } from './selection.js';
import type { ConfigSource, Path } from './source.js';
import { validInterfaceName } from './kernel-names.js';

/** What the validator needs to know about the key file; reading it is the caller's job. */
export type KeyFileFacts =
  | { exists: false }
  | {
      exists: true;
      regular: boolean;
      mode: number;
      size: number;
      /** Each key's line and size (src/config/key.ts parseKeys); absent when the file cannot be read. */
      keys?: readonly { readonly line: number; readonly size: number }[];
    };

export interface ValidateOptions {
  readonly keyFile: (path: string) => KeyFileFacts;
  readonly resolvePath: (path: string) => string;
  readonly digest: string;
}

const MIN_INTERVAL_MS = 10;
const MAX_INTERVAL_MS = 10_000;
export const DEFAULT_METRICS_PORT = 9607;
export const DEFAULT_SYNC_PORT = 7608;
/** Every cluster key: 256 bits at least. */
const MIN_KEY_BYTES = 32;

export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(text);
  if (!m) return undefined;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
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

function parseCluster(
  src: ConfigSource,
  value: unknown,
  out: Diagnostic[],
  opts: ValidateOptions,
): { value?: Cluster; interface?: string } {
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
  if (c.interface !== undefined && !validInterfaceName(c.interface))
    fail(['cluster', 'interface'], `cluster.interface ${JSON.stringify(c.interface)} is not a valid interface name`);
  const intervalMs = parseDuration(hb.interval);
  if (intervalMs === undefined)
    fail(at('interval'), `cluster.heartbeat.interval "${hb.interval}" is not a duration (e.g. 100ms, 2s)`);
  else if (intervalMs < MIN_INTERVAL_MS || intervalMs > MAX_INTERVAL_MS)
    fail(at('interval'), `cluster.heartbeat.interval must be between 10ms and 10s, not ${hb.interval}`);
  if (hb.missed < 2) fail(at('missed'), `cluster.heartbeat.missed must be at least 2, not ${hb.missed}`);
  if (hb.port < 1 || hb.port > 65535)
    fail(at('port'), `cluster.heartbeat.port must be between 1 and 65535, not ${hb.port}`);
  let group: Address | undefined;
  if (hb.transport === 'multicast') {
    if (hb.group === undefined) fail(['cluster', 'heartbeat'], 'cluster.heartbeat: multicast transport needs a group');
    else {
      const g = parseAddress(hb.group);
      if (!g.ok || g.value.family !== 4 || g.value.value >> 28n !== 0xen)
        fail(at('group'), `cluster.heartbeat.group "${hb.group}" is not an IPv4 multicast address (224.0.0.0/4)`);
      else group = g.value;
    }
  } else if (hb.group !== undefined)
    fail(at('group'), 'cluster.heartbeat.group is only used by the multicast transport');
  const keyFile = opts.resolvePath(hb.keyFile);
  const facts = opts.keyFile(keyFile);
  if (!facts.exists)
    fail(at('keyFile'), `key file ${keyFile} does not exist (create one with "egress-natd keygen ${keyFile}")`);
  else if (!facts.regular) fail(at('keyFile'), `key file ${keyFile} is not a regular file`);
  else {
    if ((facts.mode & 0o077) !== 0)
      fail(
        at('keyFile'),
        `key file ${keyFile} is readable by group or others (mode ${(facts.mode & 0o777).toString(8).padStart(4, '0')}); run "chmod 600 ${keyFile}"`,
      );
    const keys = facts.keys ?? [{ line: 1, size: facts.size }];
    if (!keys.length) fail(at('keyFile'), `key file ${keyFile} holds no key (create one with "egress-natd keygen")`);
    else if (keys.length === 1 && keys[0]!.size < MIN_KEY_BYTES)
      fail(
        at('keyFile'),
        `key file ${keyFile} holds ${keys[0]!.size} bytes; a cluster key needs at least ${MIN_KEY_BYTES}`,
      );
    for (const k of keys.length > 1 ? keys : [])
      if (k.size < MIN_KEY_BYTES)
        fail(
          at('keyFile'),
          `key file ${keyFile}: the key on line ${k.line} holds ${k.size} bytes; every key needs at least ${MIN_KEY_BYTES} (one key per line)`,
        );
  }
  const metricsPort = c.metrics?.port ?? DEFAULT_METRICS_PORT;
  if (metricsPort < 1 || metricsPort > 65535)
    fail(['cluster', 'metrics', 'port'], `cluster.metrics.port must be between 1 and 65535, not ${metricsPort}`);
  const sync = c.connectionSync;
  const syncPort = sync?.port ?? DEFAULT_SYNC_PORT;
  const syncAt = (k: string): Path => ['cluster', 'connectionSync', k];
  if (syncPort < 1 || syncPort > 65535)
    fail(syncAt('port'), `cluster.connectionSync.port must be between 1 and 65535, not ${syncPort}`);
  else if (sync?.enabled !== false && syncPort === hb.port)
    fail(
      sync?.port === undefined ? at('port') : syncAt('port'),
      `cluster.connectionSync.port and cluster.heartbeat.port are both ${syncPort}: connection sync needs a port of its own`,
    );
  const protocols = [...new Set(sync?.protocols ?? (['tcp', 'udp'] as const))];
  if (sync?.protocols && !protocols.length)
    fail(syncAt('protocols'), 'cluster.connectionSync.protocols lists no protocol (tcp, udp; or set enabled: false)');
  if (!ok || intervalMs === undefined) return { interface: c.interface };
  return {
    interface: c.interface,
    value: {
      name: c.name,
      heartbeat: {
        intervalMs,
        missed: hb.missed,
        transport: hb.transport,
        ...(group ? { group } : {}),
        port: hb.port,
        keyFile,
      },
      noGateway: c.noGateway,
      ...(c.metrics?.enabled === false ? {} : { metrics: { port: metricsPort } }),
      ...(sync?.enabled === false ? {} : { connectionSync: { port: syncPort, protocols } }),
    },
  };
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
      out.push(
        src.diag(
          'error',
          at('address'),
          `nodes[${i}].address: ${c.error}; expected the node's address with its prefix, e.g. 192.168.1.1/24`,
        ),
      );
      bad = true;
    } else if (c.value.family !== 4) {
      out.push(src.diag('error', at('address'), `nodes[${i}].address: IPv6 is not supported by config version 1`));
      bad = true;
    } else {
      const first = addresses.get(c.value.address);
      if (first !== undefined) {
        out.push(
          src.diag(
            'error',
            at('address'),
            `address ${formatAddress({ family: 4, value: c.value.address })} of node "${n.name}" is already the address of nodes[${first}]`,
          ),
        );
        bad = true;
      } else addresses.set(c.value.address, i);
    }
    const ifname = n.interface ?? defaultIf;
    if (ifname === undefined) {
      out.push(
        src.diag(
          'error',
          ['nodes', i],
          `node "${n.name}" has no interface: set cluster.interface or nodes[${i}].interface`,
        ),
      );
      bad = true;
    } else if (!validInterfaceName(ifname)) {
      out.push(
        src.diag(
          'error',
          at('interface'),
          `nodes[${i}].interface ${JSON.stringify(ifname)} is not a valid interface name`,
        ),
      );
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
