import type { Address, Cidr } from '../util/ip.js';

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

export const selects = (selector: Labels | undefined, labels: Labels): boolean =>
  !selector || Object.entries(selector).every(([k, v]) => labels[k] === v);
