import { z } from 'zod';

// The shape of config version 1. Only structure lives here; rules that relate values
// (references, subnets, uniqueness) are in validate.ts, where they can point at both ends.

const name = z.string().regex(/^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/, {
  message: 'must be a lowercase name of letters, digits, "-" and "." (at most 63 characters)',
});
const labels = z.record(
  z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$/, { message: 'is not a valid label key' }),
  z.string().max(63),
);
const nonEmpty = <T extends z.ZodType>(t: T) => z.array(t).min(1);

export const clusterShape = z.strictObject({
  name,
  interface: z.string().optional(),
  heartbeat: z.strictObject({
    interval: z.string(),
    missed: z.number().int(),
    transport: z.enum(['multicast', 'unicast']),
    group: z.string().optional(),
    port: z.number().int(),
    keyFile: z.string(),
  }),
  noGateway: z.enum(['drop', 'masquerade']),
  metrics: z.strictObject({ enabled: z.boolean().optional(), port: z.number().int().optional() }).optional(),
  connectionSync: z
    .strictObject({
      enabled: z.boolean().optional(),
      port: z.number().int().optional(),
      protocols: z.array(z.enum(['tcp', 'udp'])).optional(),
    })
    .optional(),
});

export const nodeShape = z.strictObject({
  name,
  address: z.string(),
  interface: z.string().optional(),
  role: z.enum(['worker', 'control-plane']).optional(),
  labels: labels.optional(),
});

export const gatewayShape = z.strictObject({
  name,
  floatingIPs: nonEmpty(z.string()),
  nodeSelector: labels.optional(),
});

export const workloadShape = z.strictObject({
  name,
  labels: labels.optional(),
  cidrs: z.array(z.string()).optional(),
  cgroups: z.array(z.string()).optional(),
  nodeSelector: labels.optional(),
});

const cidrEntry = z.strictObject({ cidr: z.string() });

export const policyShape = z.strictObject({
  name,
  sources: nonEmpty(
    z.strictObject({
      workloadSelector: z.strictObject({ matchLabels: labels }).optional(),
      cidrs: nonEmpty(z.string()).optional(),
    }),
  ),
  destinations: nonEmpty(cidrEntry),
  excludedDestinations: z.array(cidrEntry).optional(),
  action: z.literal('SNAT'),
  gatewayRef: z.string(),
  egressIP: z.string().optional(),
});

export const topShape = z.strictObject({
  version: z.literal(1),
  cluster: z.unknown(),
  nodes: nonEmpty(z.unknown()),
  gateways: z.array(z.unknown()).optional(),
  workloads: z.array(z.unknown()).optional(),
  policies: z.array(z.unknown()).optional(),
});

export type ClusterShape = z.infer<typeof clusterShape>;
export type NodeShape = z.infer<typeof nodeShape>;
export type GatewayShape = z.infer<typeof gatewayShape>;
export type WorkloadShape = z.infer<typeof workloadShape>;
export type PolicyShape = z.infer<typeof policyShape>;
