// The Prometheus text exposition format (version 0.0.4), written by hand: prom-client
// cost the daemon 12 MB of RSS and background timers (its default metrics), against a
// budget of 80 MB; what the daemon exports is a snapshot rendered at scrape time.

export type Labels = Readonly<Record<string, string>>;
export interface Sample {
  readonly labels?: Labels;
  readonly value: number;
  readonly suffix?: string;
}
export interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: 'gauge' | 'counter' | 'histogram';
  readonly samples: readonly Sample[];
}

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const escapeHelp = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeValue = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const formatValue = (v: number): string =>
  Number.isNaN(v) ? 'NaN' : v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : String(v);
const formatLabels = (labels: Labels | undefined): string => {
  const entries = Object.entries(labels ?? {});
  return entries.length ? `{${entries.map(([k, v]) => `${k}="${escapeValue(v)}"`).join(',')}}` : '';
};

export function render(families: readonly Family[]): string {
  return (
    families
      .map((f) =>
        [
          `# HELP ${f.name} ${escapeHelp(f.help)}`,
          `# TYPE ${f.name} ${f.type}`,
          ...f.samples.map((s) => `${f.name}${s.suffix ?? ''}${formatLabels(s.labels)} ${formatValue(s.value)}`),
        ].join('\n'),
      )
      .join('\n') + '\n'
  );
}

/** A histogram with fixed buckets, one series per label set. */
export class Histogram {
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(private readonly buckets: readonly number[]) {}

  observe(labels: Labels, value: number): void {
    const key = JSON.stringify(labels);
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    this.buckets.forEach((b, i) => {
      if (value <= b) s.counts[i]!++;
    });
    s.sum += value;
    s.count++;
  }

  samples(): Sample[] {
    return [...this.series.values()].flatMap((s) => [
      ...this.buckets.map((b, i) => ({
        suffix: '_bucket',
        labels: { ...s.labels, le: formatValue(b) },
        value: s.counts[i]!,
      })),
      { suffix: '_bucket', labels: { ...s.labels, le: '+Inf' }, value: s.count },
      { suffix: '_sum', labels: s.labels, value: s.sum },
      { suffix: '_count', labels: s.labels, value: s.count },
    ]);
  }
}
