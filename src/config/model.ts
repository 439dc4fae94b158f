import type { Address, Cidr, Range } from '../util/ip.js';
import { subtract, unionOfCidrs } from '../util/intervals.js';

/** The validated configuration: every reference resolved, every address parsed. */
export interface Config {
  readonly file: string;
  /** sha256 of the file's bytes: lets hosts compare configs cheaply. */
  readonly digest: string;
  readonly cluster: Cluster;
  readonly nodes: readonly NodeSpec[];
  readonly gateways: readonly Gateway[];
  readonly workloads: readonly Workload[];
  readonly policies: readonly Policy[];
}

export type Labels = Readonly<Record<string, string>>;
export type NoGateway = 'drop' | 'masquerade';
export type Role = 'worker' | 'control-plane';

export interface Cluster {
  readonly name: string;
  readonly heartbeat: {
    readonly intervalMs: number;
    readonly missed: number;
    readonly transport: 'multicast' | 'unicast';
    readonly group?: Address;
    readonly port: number;
    readonly keyFile: string;
  };
  readonly noGateway: NoGateway;
  /** Prometheus metrics on 127.0.0.1:port; absent when disabled. */
  readonly metrics?: { readonly port: number };
  /** Connection sync between the candidates of each floating IP (README, "Connection survival"); absent when disabled. */
  readonly connectionSync?: { readonly port: number; readonly protocols: readonly ('tcp' | 'udp')[] };
}

export interface NodeSpec {
  readonly name: string;
  readonly address: Address;
  /** The node's subnet on the L2 segment (address with host bits cleared). */
  readonly subnet: Cidr;
  readonly interface: string;
  readonly role: Role;
  readonly labels: Labels;
}

export interface Gateway {
  readonly name: string;
  readonly floatingIPs: readonly Address[];
  readonly nodeSelector?: Labels;
}

export interface Workload {
  readonly name: string;
  readonly labels: Labels;
  readonly cidrs: readonly Cidr[];
  readonly cgroups: readonly string[];
  readonly nodeSelector?: Labels;
}

/** One entry of a policy's `sources`: either selected workloads or inline CIDRs. */
export type PolicySource =
  | { readonly kind: 'workloads'; readonly workloads: readonly string[] }
  | { readonly kind: 'cidrs'; readonly cidrs: readonly Cidr[] };

export interface Policy {
  readonly name: string;
  readonly sources: readonly PolicySource[];
  readonly destinations: readonly Cidr[];
  readonly excludedDestinations: readonly Cidr[];
  readonly gateway: string;
  readonly egressIP: Address;
}

/** Marks carry the floating IP's index in 8 bits, index 0 meaning none (plan/naming.ts checks MARK_MASK holds them). */
export const MAX_FLOATING_IPS = 255;

export const selects = (selector: Labels | undefined, labels: Labels): boolean =>
  !selector || Object.entries(selector).every(([k, v]) => labels[k] === v);

export class UnknownNodeError extends Error {}

/** The node called `name`, or UnknownNodeError naming the nodes the config has. */
export function nodeNamed(config: Config, name: string): NodeSpec {
  const node = config.nodes.find((n) => n.name === name);
  if (!node)
    throw new UnknownNodeError(
      `node "${name}" is not in ${config.file} (known: ${config.nodes.map((n) => n.name).join(', ')})`,
    );
  return node;
}

/** What one entry of a policy's sources brings: its inline CIDRs, or one workload it selects. */
export interface SourceMatch {
  readonly cidrs: readonly Cidr[];
  readonly cgroups: readonly string[];
}

export interface PolicySourcesOn {
  /** Each inline CIDR list and each selected workload, in the order of the policy's sources. */
  readonly matches: readonly SourceMatch[];
  /** Every CIDR of `matches`. */
  readonly cidrs: readonly Cidr[];
  /** Every cgroup of `matches`, each once. */
  readonly cgroups: readonly string[];
}

/**
 * What a policy's sources match on `node`: its inline CIDRs, and the CIDRs and cgroups of
 * the workloads it selects whose nodeSelector admits the node. Without a node: on any
 * node (every workload it selects counts).
 */
export function policySourcesOn(
  config: Pick<Config, 'workloads'>,
  policy: Pick<Policy, 'sources'>,
  node?: Pick<NodeSpec, 'labels'>,
): PolicySourcesOn {
  const matches = policy.sources.flatMap((s): SourceMatch[] =>
    s.kind === 'cidrs'
      ? [{ cidrs: s.cidrs, cgroups: [] }]
      : s.workloads
          .map((name) => config.workloads.find((w) => w.name === name)!)
          .filter((w) => !node || selects(w.nodeSelector, node.labels)),
  );
  return {
    matches,
    cidrs: matches.flatMap((m) => m.cidrs),
    cgroups: [...new Set(matches.flatMap((m) => m.cgroups))],
  };
}

const reached = new WeakMap<Pick<Policy, 'destinations' | 'excludedDestinations'>, readonly Range[]>();

/**
 * The addresses a policy's destinations reach: its CIDRs minus the excluded ones, sorted
 * and disjoint. Validation, planning and status all ask; computed once per policy.
 */
export function reachedDestinations(policy: Pick<Policy, 'destinations' | 'excludedDestinations'>): readonly Range[] {
  let ranges = reached.get(policy);
  if (!ranges) {
    ranges = subtract(unionOfCidrs(policy.destinations), unionOfCidrs(policy.excludedDestinations));
    reached.set(policy, ranges);
  }
  return ranges;
}
