import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { Metrics, type MetricsSnapshot } from '../../src/daemon/metrics.js';
import { DROP_REASONS, type DropReason } from '../../src/cluster/protocol.js';
import { REPO } from '../helpers.js';

// The Grafana dashboard and the Prometheus rules in contrib/ query only metrics that the
// daemon exports, with labels it sets: a renamed metric breaks this test, not an
// operator's dashboard at 3 a.m. Where promtool is installed (Debian: prometheus; or
// PROMTOOL=path) every query is also parsed by Prometheus itself, and the alerts' own
// tests (contrib/egress-natd.rules.test.yml) run.

const SNAPSHOT: MetricsSnapshot = {
  node: 'h1',
  ready: true,
  digest: 'a',
  drift: false,
  floatingIPs: [{ ip: '10.0.0.100', gateway: 'g', owner: 'h1', held: true }],
  nodes: [{ name: 'h1', up: true, eligible: true, draining: false, carrier: true, digest: 'a', authFailing: false }],
  policies: [{ name: 'shop', state: 'Active' }],
  heartbeatsSent: 1,
  heartbeatsReceived: 1,
  rejected: Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>,
  authFailures: [{ node: 'h2', count: 0 }],
  outvoted: false,
  reconcileErrors: 0,
  repairs: 0,
  takeovers: 1,
  failovers: { assigned: 1 },
  garps: 1,
  reloads: { ok: 0, failed: 0 },
  loopStalls: 0,
  relayDropped: [{ ip: '10.0.0.100', reason: 'source', packets: 0 }],
  traffic: {
    egressIPs: {
      '10.0.0.100': {
        packets: 1,
        bytes: 1,
        connections: 1,
        noGatewayDropped: 0,
        relayDropped: { source: 0, destination: 0 },
      },
    },
    policies: { shop: { packets: 1, bytes: 1 } },
  },
  snatPorts: { '10.0.0.100': { connections: 1, busiest: { destination: '203.0.113.10:443/tcp', ports: 1, usage: 0 } } },
};

/** Every series the daemon exports, as `name{label="value",...}` lines, and each family's type. */
async function exported(): Promise<{ types: Map<string, string>; series: string[] }> {
  const metrics = new Metrics(() => Promise.resolve(SNAPSHOT));
  metrics.observeReconcile(0.01, true);
  metrics.observeTakeover(0.05);
  const text = await metrics.render();
  const types = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1]!, m[2]!);
  return { types, series: text.split('\n').filter((l) => l && !l.startsWith('#')) };
}

/** What is wrong with the metrics `expr` queries: unknown names, and selector labels no series of the name has. */
function problems(expr: string, known: Awaited<ReturnType<typeof exported>>): string[] {
  const out: string[] = [];
  for (const m of expr.matchAll(/\b((?:egress_natd|process)_[a-z0-9_]+)(\{[^}]*\})?/g)) {
    const name = m[1]!;
    const base = name.replace(/_(bucket|sum|count)$/, '');
    const family = known.types.has(name) ? name : known.types.get(base) === 'histogram' ? base : undefined;
    if (!family) {
      out.push(`${name} is not exported`);
      continue;
    }
    const series = known.series.filter((s) => s.startsWith(`${name}{`) || s.startsWith(`${name} `));
    for (const [, label] of (m[2] ?? '').matchAll(/(\w+)\s*(?:=~|!=|!~|=)\s*"/g))
      if (!series.some((s) => s.includes(`${label}="`))) out.push(`${name} has no label ${label}`);
  }
  return out;
}

const dashboard = JSON.parse(readFileSync(join(REPO, 'contrib/grafana-egress-natd.json'), 'utf8')) as {
  panels: { title: string; targets?: { expr: string }[] }[];
};
const dashboardExprs = dashboard.panels.flatMap((p) =>
  (p.targets ?? []).map((x) => ({ where: p.title, expr: x.expr })),
);
const rules = parse(readFileSync(join(REPO, 'contrib/egress-natd.rules.yml'), 'utf8')) as {
  groups: { name: string; rules: { alert: string; expr: string }[] }[];
};
const ruleExprs = rules.groups.flatMap((g) => g.rules.map((r) => ({ where: r.alert, expr: r.expr })));

t.test('the check itself: it knows the exported metrics and catches a wrong name or label', async (t) => {
  const known = await exported();
  t.same(problems('sum(rate(egress_natd_policy_packets_total[5m]))', known), []);
  t.same(problems('egress_natd_takeover_duration_seconds_bucket{le="1"}', known), [], 'histogram series');
  t.same(problems('egress_natd_policy_packet_total', known), ['egress_natd_policy_packet_total is not exported']);
  t.same(problems('egress_natd_policy_state{phase="Active"}', known), ['egress_natd_policy_state has no label phase']);
});

t.test('every metric the dashboard and the alert rules query is exported', async (t) => {
  const known = await exported();
  t.ok(dashboardExprs.length > 10, `${dashboardExprs.length} dashboard queries`);
  t.ok(ruleExprs.length > 10, `${ruleExprs.length} alert rules`);
  for (const { where, expr } of [...dashboardExprs, ...ruleExprs]) t.same(problems(expr, known), [], where);
});

t.test('every alert has a severity and a summary', async (t) => {
  for (const g of rules.groups)
    for (const r of g.rules as { alert: string; labels?: { severity?: string }; annotations?: { summary?: string } }[])
      t.ok(r.labels?.severity && r.annotations?.summary, r.alert);
});

const promtool = (() => {
  try {
    execFileSync(process.env['PROMTOOL'] ?? 'promtool', ['--version'], { stdio: 'ignore' });
    return process.env['PROMTOOL'] ?? 'promtool';
  } catch {
    return undefined;
  }
})();

t.test(
  'promtool accepts the rules and every dashboard query',
  { skip: promtool ? false : 'no promtool' },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'contrib-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const asRules = join(dir, 'dashboard.rules.yml');
    const record = dashboardExprs.map((q, i) => ({
      record: `dashboard:query_${i}`,
      expr: q.expr.replaceAll('$__rate_interval', '5m'),
    }));
    writeFileSync(asRules, stringify({ groups: [{ name: 'dashboard', rules: record }] }));
    for (const file of [join(REPO, 'contrib/egress-natd.rules.yml'), asRules]) {
      const out = execFileSync(promtool!, ['check', 'rules', file], { encoding: 'utf8' });
      t.match(out, /SUCCESS/, file);
    }
    // The alerts fire on the series the daemons export, and stay quiet until their `for:`.
    const tested = execFileSync(promtool!, ['test', 'rules', 'egress-natd.rules.test.yml'], {
      cwd: join(REPO, 'contrib'),
      encoding: 'utf8',
    });
    t.match(tested, /SUCCESS/, 'promtool test rules');
  },
);
