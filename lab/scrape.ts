import type { Lab } from './lab.js';

// Reads a daemon's Prometheus metrics from inside its lab host (they listen on 127.0.0.1).

export type Samples = ReadonlyMap<string, number>;

/** `name{labels}` → value, for every sample line of the text format. */
export function parseSamples(text: string): Samples {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+?(?:\{.*\})?) (\S+)$/.exec(line);
    if (m) samples.set(m[1]!, Number(m[2]));
  }
  return samples;
}

export async function scrape(
  lab: Lab,
  host: string,
  port: number,
): Promise<{ text: string; samples: Samples; contentType: string }> {
  const js = `fetch('http://127.0.0.1:${port}/metrics').then(async (r) => { if (!r.ok) throw new Error('HTTP ' + r.status); console.log(r.headers.get('content-type')); process.stdout.write(await r.text()); }).catch((e) => { console.error(e.message); process.exit(1); })`;
  const { stdout } = await lab.sh(host, `${process.execPath} -e "${js}"`);
  const nl = stdout.indexOf('\n');
  const text = stdout.slice(nl + 1);
  return { text, samples: parseSamples(text), contentType: stdout.slice(0, nl) };
}
