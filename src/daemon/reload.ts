import { formatDiagnostic, hasErrors, sortDiagnostics } from '../config/diagnostics.js';
import { readKeys, type ClusterKeys } from '../config/key.js';
import type { LoadResult as LoadedConfig } from '../config/load.js';
import { nodeNamed, type Config, type NodeSpec, type Policy } from '../config/model.js';
import { encode } from '../cluster/protocol.js';
import { floatingIPs } from '../plan/desired.js';

// SIGHUP, the part that changes nothing: judge the file as read and validated, read the
// key, and check that this node can run it. The daemon commits the result, or logs the errors
// and runs on with the config it has.

export type ReloadCandidate =
  | { readonly ok: false; readonly errors: readonly string[]; readonly warnings: readonly string[] }
  | {
      readonly ok: true;
      readonly unchanged: boolean;
      readonly config: Config;
      readonly self: NodeSpec;
      readonly hmacKey: ClusterKeys;
      readonly warnings: readonly string[];
    };

/**
 * Judges a loaded (read and validated) `file`: its diagnostics, this node in it, its key.
 * The loading is the caller's (in a process of its own: config-reader.ts).
 */
export function judgeReload(
  loaded: LoadedConfig,
  file: string,
  nodeName: string,
  current: { readonly digest: string; readonly hmacKey: ClusterKeys },
): ReloadCandidate {
  const { config, diagnostics } = loaded;
  const sorted = sortDiagnostics(diagnostics);
  const warnings = sorted.filter((d) => d.severity !== 'error').map(formatDiagnostic);
  if (!config || hasErrors(diagnostics))
    return { ok: false, errors: sorted.filter((d) => d.severity === 'error').map(formatDiagnostic), warnings };
  try {
    const self = nodeNamed(config, nodeName);
    const hmacKey = readKeys(config.cluster.heartbeat.keyFile);
    // Names that do not fit a heartbeat are refused here, not by the heartbeat timer.
    encode(
      {
        cluster: config.cluster.name,
        node: self.name,
        flags: 0,
        incarnation: 0n,
        seq: 0n,
        digest: config.digest,
        claims: [],
      },
      hmacKey[0]!,
    );
    const sameKeys =
      hmacKey.length === current.hmacKey.length && hmacKey.every((k, i) => k.equals(current.hmacKey[i]!));
    const unchanged = config.digest === current.digest && sameKeys;
    return { ok: true, unchanged, config, self, hmacKey, warnings };
  } catch (e) {
    return { ok: false, errors: [`${file}: error: ${(e as Error).message}`], warnings };
  }
}

/** What a reload changes, by name, for the log line. */
export function reloadSummary(before: Config, after: Config): Record<string, string[]> {
  const diff = (a: readonly string[], b: readonly string[]) => ({
    added: b.filter((x) => !a.includes(x)),
    removed: a.filter((x) => !b.includes(x)),
  });
  const ips = (c: Config) => floatingIPs(c).map((f) => f.text);
  const text = (p: Policy) => JSON.stringify(p, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
  const f = diff(ips(before), ips(after));
  const pNames = diff(
    before.policies.map((p) => p.name),
    after.policies.map((p) => p.name),
  );
  const changedPolicies = after.policies
    .filter((p) => {
      const old = before.policies.find((q) => q.name === p.name);
      return old && text(old) !== text(p);
    })
    .map((p) => p.name);
  const n = diff(
    before.nodes.map((x) => x.name),
    after.nodes.map((x) => x.name),
  );
  return {
    floatingIPsAdded: f.added,
    floatingIPsRemoved: f.removed,
    policiesAdded: pNames.added,
    policiesRemoved: pNames.removed,
    policiesChanged: changedPolicies,
    nodesAdded: n.added,
    nodesRemoved: n.removed,
  };
}
