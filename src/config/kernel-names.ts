// Strings from the config that reach the kernel's tools: cgroup paths go into the nft
// ruleset as quoted strings, interface names into rtnetlink, /proc/sys paths and
// arping. Checked at `check` time, so that a bad value is a FILE:LINE:COL error and
// never nft syntax, a path outside /proc/sys/net/ipv4/conf, or a failing reconcile.

/** C0 controls and DEL: a ruleset line must stay one line, a log line too. */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

/**
 * Whether `s` can be written as an nft quoted string. nft's quoted strings end at the
 * next `"` and take no escapes (checked with nft 1.0.6: `\` is kept as is, so the
 * JSON-style quoting of the ruleset would double it), and a control character would
 * break the line.
 */
export const nftQuotable = (s: string): boolean => !CONTROL.test(s) && !s.includes('"') && !s.includes('\\');

export const NFT_UNQUOTABLE = 'cannot be quoted for nft (no ", \\ or control characters)';

/**
 * The kernel's rule (dev_valid_name: 1 to 15 bytes, not "." or "..", no "/", ":" or
 * whitespace), and quotable, since names are logged and matched in rules.
 */
export const validInterfaceName = (name: string): boolean =>
  name.length > 0 &&
  Buffer.byteLength(name) <= 15 &&
  name !== '.' &&
  name !== '..' &&
  !/[/:\s]/.test(name) &&
  nftQuotable(name);
