import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatDiagnostic } from '../../src/config/diagnostics.js';
import { loadConfigText } from '../../src/config/load.js';
import { CONFIG_DIR, fakeKeyFile, validText } from '../helpers.js';

t.test('the valid config has no diagnostics', async (t) => {
  const r = loadConfigText('valid.yaml', validText(), fakeKeyFile);
  t.same(r.diagnostics.map(formatDiagnostic), []);
  t.ok(r.config);
  t.equal(r.config!.nodes.find((n) => n.name === 'cp1')!.interface, 'eth1', 'node interface overrides the cluster one');
  t.equal(r.config!.nodes.find((n) => n.name === 'worker2')!.role, 'worker', 'role defaults to worker');
});

const dir = join(CONFIG_DIR, 'invalid');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml'))
  .sort();
t.ok(files.length >= 30, `at least 30 invalid configs (${files.length})`);

for (const f of files) {
  t.test(f, async (t) => {
    const text = readFileSync(join(dir, f), 'utf8');
    const m = /# expect: (\d+):(\d+): (error|warning): (.*)\s*$/.exec(text);
    t.ok(m, 'the file states what it expects');
    const [, line, col, severity, message] = m!;
    const r = loadConfigText(f, text, fakeKeyFile);
    t.notOk(r.config, 'an invalid config yields no model');
    const shown = r.diagnostics.map(formatDiagnostic);
    const want = `${f}:${line}:${col}: ${severity}: ${message}`;
    t.ok(
      shown.some((s) => s.startsWith(want)),
      `reports "${want}"`,
      { found: shown },
    );
  });
}

t.test('every error is reported at once', async (t) => {
  const text = validText()
    .replace('interval: 100ms', 'interval: 1ms')
    .replace('gatewayRef: default', 'gatewayRef: nope')
    .replace('cidrs: [10.10.1.0/24]', 'cidrs: [10.10.1.9/24]');
  const r = loadConfigText('x.yaml', text, fakeKeyFile);
  t.equal(r.diagnostics.filter((d) => d.severity === 'error').length, 3);
});

t.test('warnings: a selector that selects nothing, overlapping policies', async (t) => {
  const text =
    validText().replace(
      'workloadSelector: { matchLabels: { user: alice, role: frontend } }',
      'workloadSelector: { matchLabels: { user: nobody } }',
    ) +
    `  - name: second
    sources: [{ cidrs: [10.20.5.0/24] }]
    destinations: [{ cidr: 8.8.0.0/16 }]
    action: SNAT
    gatewayRef: default
  - name: disjoint
    sources: [{ cidrs: [10.20.5.0/24] }]
    destinations: [{ cidr: 8.8.8.8/32 }]
    action: SNAT
    gatewayRef: default
`;
  const r = loadConfigText('w.yaml', text, fakeKeyFile);
  t.ok(r.config, 'warnings do not make the config invalid');
  const shown = r.diagnostics.map(formatDiagnostic);
  t.ok(
    shown.includes('w.yaml:37:27: warning: policy "egress": workloadSelector selects no workload'),
    'selector warning',
    { shown },
  );
  t.ok(
    shown.includes(
      'w.yaml:46:11: warning: policy "second" overlaps "egress": packets matched by both use the first in file order',
    ),
    'overlap warning',
    { shown },
  );
  t.notOk(
    shown.some((s) => s.includes('"disjoint" overlaps "egress"')),
    'an excluded destination is not an overlap',
  );
  t.ok(
    shown.some((s) => s.includes('"disjoint" overlaps "second"')),
    'but a later policy that covers it is',
  );
});

t.test('metrics: on 127.0.0.1:9607 unless configured otherwise or disabled', async (t) => {
  const load = (extra: string) =>
    loadConfigText('m.yaml', validText().replace('  noGateway: drop', `  noGateway: drop${extra}`), fakeKeyFile).config;
  t.same(load('')?.cluster.metrics, { port: 9607 });
  t.same(load('\n  metrics: { port: 9100 }')?.cluster.metrics, { port: 9100 });
  t.equal(load('\n  metrics: { enabled: false }')?.cluster.metrics, undefined);
});
