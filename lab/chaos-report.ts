import type { ChaosReport } from './chaos.js';
import type { Finding } from './chaos-findings.js';
import { DOUBLE_BOUND_MS, OWNER_BOUND_MS } from './chaos.js';

// What a soak found, as Markdown: printed by `make chaos`, written by `make bench`.

export const INVARIANTS = [
  ['wrong-source', 'an answer with another source than the policy floating IP (c1 → .100, c2 → .101)'],
  [
    'leak',
    'under noGateway: drop, a packet at the router to a policy destination with a source that is not a floating IP',
  ],
  ['two-holders', `two connected hosts hold one IP for over ${DOUBLE_BOUND_MS} ms`],
  ['no-owner', `an IP without holder for over ${OWNER_BOUND_MS} ms while an eligible candidate is up and connected`],
  ['held-without-daemon', 'a host holds an IP after its daemon ended and release ran'],
  ['held-after-stop', 'a daemon exits after SIGTERM and its host still holds an IP'],
  ['daemon-crash', 'a daemon exits on its own, or not with 0 after SIGTERM'],
  ['daemon-fatal', 'a fatal line (or a non-JSON line: a stack trace) in a daemon log'],
  ['reload', 'a good reload not applied, or a bad one not rejected, within 5 s'],
  ['command-failed', 'drain or undrain failed'],
  ['leftover', 'a process, namespace, cgroup, directory or egress-natd object left after the soak'],
  ['harness', 'the harness itself failed (a fault could not be injected or healed)'],
] as const;

const total = (f: Record<string, Finding>) => Object.values(f).reduce((a, b) => a + b.count, 0);
const cell = (s: string) => s.replaceAll('|', '\\|').replaceAll('\n', ' ');

export function violationCount(r: ChaosReport): number {
  return total(r.violations);
}

export function reportMarkdown(r: ChaosReport): string {
  const faults = Object.entries(r.faults)
    .sort()
    .map(([k, n]) => `| ${k} | ${n} |`);
  const requests = Object.entries(r.requests).map(
    ([from, q]) =>
      `| ${from} → ${q.expect} | ${q.sent} | ${q.answered} | ${((100 * q.answered) / Math.max(1, q.sent)).toFixed(2)} % |`,
  );
  const known = new Set<string>(INVARIANTS.map(([k]) => k));
  const kinds = [...INVARIANTS.map(([k]) => k), ...Object.keys(r.violations).filter((k) => !known.has(k))];
  const rows = kinds.map((k) => {
    const f = r.violations[k];
    const first = f?.examples[0];
    return `| ${k} | ${f?.count ?? 0} | ${first ? cell(`${(first.t / 1000).toFixed(1)} s: ${first.what}`) : ''} |`;
  });
  const during = (f: Finding) =>
    Object.entries(f.during)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
  const examples = kinds
    .filter((k) => r.violations[k])
    .map(
      (k) =>
        `- **${k}** (${r.violations[k]!.count}; during or within 1 s after: ${during(r.violations[k]!)}):\n${r.violations[k]!.examples.map((e) => `  - ${(e.t / 1000).toFixed(1)} s: ${e.what}`).join('\n')}`,
    );
  const errors = Object.entries(r.errorLines).map(
    ([msg, f]) =>
      `- ${f.count} × "${msg}…" (during: ${during(f)}), e.g. ${(f.examples[0]!.t / 1000).toFixed(1)} s: \`${f.examples[0]!.what}\``,
  );
  return `Seed ${r.seed} (\`SEED=${r.seed}\` repeats the choices), ${r.minutes} min of faults, ${r.elapsedS.toFixed(0)} s in all;
load average ${r.load.before.toFixed(1)} before, ${r.load.after.toFixed(1)} after (2 cores); ${r.samples} kernel samples judged;
harness CPU ${r.harnessCpuS.toFixed(1)} s (the judge) + ${r.helpersCpuS.toFixed(1)} s (sampler and tcpdump).

| fault | injected |
|---|---:|
${faults.join('\n')}

| requests | sent | answered | answered share |
|---|---:|---:|---:|
${requests.join('\n')}

| violation | count | first (time into the soak: what) |
|---|---:|---|
${rows.join('\n')}

**${violationCount(r)} violations.**
${examples.length ? `\n${examples.join('\n')}\n` : ''}
Daemon error lines (level error; reported, not counted; the expected ones of bad reloads left out): ${total(r.errorLines)}.
${errors.join('\n')}
`;
}
