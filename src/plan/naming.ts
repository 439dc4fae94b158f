import { createHash } from 'node:crypto';
import { MAX_FLOATING_IPS } from '../config/model.js';
import { formatAddress, type Address } from '../util/ip.js';

// Every kernel object egress-natd owns is named or numbered here, so that `release`
// can find exactly its own objects and nothing else.

export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'egress_natd';

/** fwmark bits egress-natd uses; all other bits of the mark are preserved. */
export const MARK_MASK = 0x00ff0000;
export const MARK_SHIFT = 16;
export const markOf = (index: number): number => (index << MARK_SHIFT) >>> 0;
if (MARK_MASK >>> MARK_SHIFT !== MAX_FLOATING_IPS)
  throw new Error('MARK_MASK must hold exactly the indexes 1..MAX_FLOATING_IPS');

/** Policy routing: one rule and one table per floating IP, numbered by its mark index (1..MAX_FLOATING_IPS). */
export const RULE_PREF_BASE = 7600;
export const ROUTE_TABLE_BASE = 7600;
export const rulePrefOf = (index: number): number => RULE_PREF_BASE + index;
export const routeTableOf = (index: number): number => ROUTE_TABLE_BASE + index;
/** The rule preferences and route tables that are egress-natd's, whatever the config says now. */
export const OUR_RULE_PREFS = { min: rulePrefOf(1), max: rulePrefOf(MAX_FLOATING_IPS) } as const;
export const OUR_ROUTE_TABLES = { min: routeTableOf(1), max: routeTableOf(MAX_FLOATING_IPS) } as const;
export const isOurRulePref = (pref: number): boolean => pref >= OUR_RULE_PREFS.min && pref <= OUR_RULE_PREFS.max;
export const isOurRouteTable = (table: number): boolean =>
  table >= OUR_ROUTE_TABLES.min && table <= OUR_ROUTE_TABLES.max;
/** rtnetlink "protocol" stamped on our rules and routes (values above 4 are free for daemons). */
export const RT_PROTOCOL = 76;

export const MACVLAN_PREFIX = 'enat';

export function macvlanName(ip: Address): string {
  if (ip.family === 4) return MACVLAN_PREFIX + ip.value.toString(16).padStart(8, '0');
  return MACVLAN_PREFIX + createHash('sha256').update(formatAddress(ip)).digest('hex').slice(0, 11);
}

/** The chain that sets mark *i*: where every lookup of a packet for floating IP *i* ends. */
export const egressChain = (index: number): string => `egress_${index}`;

/** The chain a policy's destination lookups go to (by its position in the file): it counts, then goes to its IP's egress chain. */
export const policyChain = (index: number): string => `pol_${index}`;

/** Why the relay guard of a floating IP dropped a packet (docs/datapath.md, "The relay guard"). */
export const RELAY_REASONS = ['source', 'destination'] as const;
export type RelayReason = (typeof RELAY_REASONS)[number];
/** A floating IP in object names: the tail of its macvlan's name (8 hex digits for IPv4). */
const relayTag = (ip: Address): string => macvlanName(ip).slice(MACVLAN_PREFIX.length);
/**
 * Named counters that count what flows (docs/datapath.md, "Counters"). They depend on the
 * config alone, never on who owns what, so they exist on every node and keep counting
 * across changes of the plan. Per floating IP: packets and bytes leaving this host with
 * it as source (after SNAT: on its owner), connections started with it, and selected
 * packets dropped because nobody owns it (noGateway: drop). Per policy (by name, which
 * survives reordering): packets and bytes this host's own sources sent into it.
 */
export const egressIPCounter = (ip: Address, what: 'out' | 'new' | 'nogw'): string => `${what}_${relayTag(ip)}`;
export const policyCounter = (name: string): string => `policy_${name}`;

/** The relay guard's chain of a floating IP this host owns, named after the IP like its macvlan. */
export const relayChain = (ip: Address): string => `relay_${relayTag(ip)}`;
/** Its named drop counter for one reason. */
export const relayCounter = (ip: Address, reason: RelayReason): string => `${relayChain(ip)}_${reason}`;
/** One of its class chains: the IP and the content-addressed destination map it looks up. */
export const relayClassChain = (ip: Address, map: string): string => `rc_${relayTag(ip)}_${map.slice(2)}`;

/** A stable, locally administered unicast MAC per floating IP, so ARP caches stay valid on failover (like VRRP's virtual MAC). */
export function virtualMac(ip: Address): string {
  const tail =
    ip.family === 4
      ? ip.value.toString(16).padStart(8, '0')
      : createHash('sha256').update(formatAddress(ip)).digest('hex').slice(0, 8);
  return ['02', 'ee', ...tail.match(/../g)!].join(':');
}

export const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

export const digest = (text: string, length = 12): string =>
  createHash('sha256').update(text).digest('hex').slice(0, length);
