// Addresses are bigints tagged with their family so that nothing downstream assumes
// 32 bits: version 1 of the config accepts IPv4 only, but the model is ready for IPv6.

export type Family = 4 | 6;

export interface Address {
  readonly family: Family;
  readonly value: bigint;
}

export interface Cidr {
  readonly family: Family;
  readonly base: bigint;
  readonly prefix: number;
}

/** An inclusive range of addresses of one family. */
export interface Range {
  readonly family: Family;
  readonly start: bigint;
  readonly end: bigint;
}

export const bitsOf = (family: Family): number => (family === 4 ? 32 : 128);

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/** Dotted quad to its value, digit by digit: called once per CIDR of a config of 100,000. */
function parseIPv4(text: string): bigint | undefined {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 46; // a dot after the last octet
    if (c === 46) {
      if (digits === 0 || octet > 255 || ++dots > 4) return undefined;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 3 || (digits === 1 && octet === 0)) return undefined; // no octal ambiguity
      octet = octet * 10 + (c - 48);
      digits++;
    } else return undefined;
  }
  return dots === 4 ? BigInt(value) : undefined;
}

function parseIPv6(text: string): bigint | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || !text.includes(':')) return undefined;
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups = (s: string): string[] | undefined => {
    if (s === '') return [];
    const parts = s.split(':');
    const out: string[] = [];
    for (const [i, p] of parts.entries()) {
      if (i === parts.length - 1 && p.includes('.')) {
        const v4 = parseIPv4(p);
        if (v4 === undefined) return undefined;
        out.push(((v4 >> 16n) & 0xffffn).toString(16), (v4 & 0xffffn).toString(16));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
        out.push(p);
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  return all.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

export function parseAddress(text: string): Parsed<Address> {
  const v4 = parseIPv4(text);
  if (v4 !== undefined) return { ok: true, value: { family: 4, value: v4 } };
  const v6 = parseIPv6(text);
  if (v6 !== undefined) return { ok: true, value: { family: 6, value: v6 } };
  return { ok: false, error: `"${text}" is not an IP address` };
}

/** Parses "a.b.c.d/len". With `allowHostBits`, an interface address such as 192.168.1.1/24. */
export function parseCidr(text: string, allowHostBits = false): Parsed<Cidr & { address: bigint }> {
  const slash = text.indexOf('/');
  if (slash < 0) return { ok: false, error: `"${text}" is not a CIDR (expected ADDRESS/PREFIX)` };
  const addr = parseAddress(text.slice(0, slash));
  if (!addr.ok) return { ok: false, error: `"${text}" is not a CIDR: ${addr.error}` };
  const lenText = text.slice(slash + 1);
  const bits = bitsOf(addr.value.family);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > bits) {
    return { ok: false, error: `"${text}" has an invalid prefix length (0 to ${bits})` };
  }
  const prefix = Number(lenText);
  const base = addr.value.value & netmask(addr.value.family, prefix);
  if (!allowHostBits && base !== addr.value.value) {
    return {
      ok: false,
      error: `"${text}" has host bits set (did you mean ${formatAddress({ family: addr.value.family, value: base })}/${prefix}?)`,
    };
  }
  return { ok: true, value: { family: addr.value.family, base, prefix, address: addr.value.value } };
}

function computed(family: Family, prefix: number): bigint {
  const bits = BigInt(bitsOf(family));
  const all = (1n << bits) - 1n;
  return (all << (bits - BigInt(prefix))) & all;
}
/** Every netmask of each family, computed once: masks are asked for per CIDR. */
const masks = (family: Family): bigint[] =>
  Array.from({ length: bitsOf(family) + 1 }, (_, prefix) => computed(family, prefix));
const MASKS: Record<Family, bigint[]> = { 4: masks(4), 6: masks(6) };

export function netmask(family: Family, prefix: number): bigint {
  return MASKS[family][prefix] ?? computed(family, prefix);
}

export function cidrRange(c: Cidr): Range {
  const host = netmask(c.family, bitsOf(c.family)) ^ netmask(c.family, c.prefix);
  return { family: c.family, start: c.base, end: c.base | host };
}

export function cidrContains(c: Cidr, a: Address): boolean {
  return c.family === a.family && (a.value & netmask(c.family, c.prefix)) === c.base;
}

export function rangesOverlap(a: Range, b: Range): boolean {
  return a.family === b.family && a.start <= b.end && b.start <= a.end;
}

export function formatAddress(a: Address): string {
  if (a.family === 4) {
    const v = Number(a.value);
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((a.value >> s) & 0xffffn).toString(16));
  // RFC 5952: compress the longest run of two or more zero groups.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

export function formatCidr(c: Cidr): string {
  return `${formatAddress({ family: c.family, value: c.base })}/${c.prefix}`;
}

/** Prefix form where the range is one CIDR, else "start-end" (nft accepts both). */
export function formatRange(r: Range): string {
  const size = r.end - r.start + 1n;
  if ((size & (size - 1n)) === 0n && (r.start & (size - 1n)) === 0n) {
    const hostBits = r.family === 4 ? Math.log2(Number(size)) : size.toString(2).length - 1;
    return formatCidr({ family: r.family, base: r.start, prefix: bitsOf(r.family) - hostBits });
  }
  const a = formatAddress({ family: r.family, value: r.start });
  const b = formatAddress({ family: r.family, value: r.end });
  return r.start === r.end ? a : `${a}-${b}`;
}

export function addressBytes(a: Address): Buffer {
  const n = bitsOf(a.family) / 8;
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Number((a.value >> BigInt(8 * (n - 1 - i))) & 0xffn);
  return b;
}

export function compareAddress(a: Address, b: Address): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}
