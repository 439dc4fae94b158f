// Random edits of a config file, for the fuzz tests: lines dropped, repeated, re-indented,
// characters inserted or deleted, values replaced by what parsers find awkward.

export const NASTY = [
  '',
  '~',
  'null',
  '[]',
  '{}',
  '-1',
  '1e999',
  '0x1f',
  '"\\u0000"',
  '&a',
  '*a',
  '!!binary AA',
  '? x',
  '|',
  '>',
  '0.0.0.0/0',
  '::/0',
  '300.1.1.1',
  'ffff',
  '@',
  '%',
  "'",
  '"',
  '#',
  '\t',
  ': :',
  '- -',
  '999999999999999999999',
];

export function mutate(text: string, r: () => number): string {
  const lines = text.split('\n');
  const n = 1 + Math.floor(r() * 4);
  for (let k = 0; k < n; k++) {
    const i = Math.floor(r() * lines.length);
    const line = lines[i] ?? '';
    switch (Math.floor(r() * 8)) {
      case 0:
        lines.splice(i, 1);
        break;
      case 1:
        lines.splice(i, 0, lines[Math.floor(r() * lines.length)] ?? '');
        break;
      case 2:
        lines[i] = line.replace(/:\s.*$/, `: ${NASTY[Math.floor(r() * NASTY.length)]}`);
        break;
      case 3:
        lines[i] = `${' '.repeat(Math.floor(r() * 6))}${line.trimStart()}`;
        break;
      case 4: {
        const p = Math.floor(r() * line.length);
        lines[i] = line.slice(0, p) + line.slice(p + 1);
        break;
      }
      case 5: {
        const p = Math.floor(r() * line.length);
        lines[i] = line.slice(0, p) + String.fromCharCode(32 + Math.floor(r() * 95)) + line.slice(p);
        break;
      }
      case 6:
        lines[i] = line.replace(/\d+/, String(Math.floor(r() * 1e6)));
        break;
      default:
        lines[i] = line.replace(/[a-z]+/, NASTY[Math.floor(r() * NASTY.length)]!);
        break;
    }
  }
  return lines.join('\n');
}
