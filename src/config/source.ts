import { createRequire } from 'node:module';
import type { Document, LineCounter as Counter, Node } from 'yaml';
import type { Diagnostic, Severity } from './diagnostics.js';

// The positions-tracking parser is loaded on first use: a valid config is read by the
// fast parser (fast-parse.ts), and a daemon that never meets an invalid one never pays
// the ~10 MB this library costs.
type YamlLib = typeof import('yaml');
let lib: YamlLib | undefined;
const yaml = (): YamlLib => (lib ??= createRequire(import.meta.url)('yaml') as YamlLib);

export type Path = readonly (string | number)[];

/**
 * A parsed YAML document that can say where any path is, so that every message points
 * at the key or the value it is about.
 */
export class ConfigSource {
  readonly data: unknown;
  readonly syntaxErrors: Diagnostic[];
  private readonly counter: Counter | undefined;
  private readonly doc: Document.Parsed | undefined;

  /**
   * Data parsed elsewhere (config/fast-parse.ts), with no positions: every path is at 1:1.
   * Only for a first validation whose messages, if any, are thrown away.
   */
  static withoutPositions(file: string, data: unknown): ConfigSource {
    return new ConfigSource(file, '', { data });
  }

  constructor(
    readonly file: string,
    text: string,
    parsed?: { readonly data: unknown },
  ) {
    if (parsed) {
      this.syntaxErrors = [];
      this.data = parsed.data;
      return;
    }
    const { LineCounter, parseDocument } = yaml();
    this.counter = new LineCounter();
    this.doc = parseDocument(text, { lineCounter: this.counter, uniqueKeys: true, prettyErrors: false });
    this.syntaxErrors = [...this.doc.errors, ...this.doc.warnings].map((e) => {
      const p = this.counter!.linePos(e.pos[0]);
      return { file, line: p.line, col: p.col, severity: 'error' as const, message: e.message.split('\n')[0]! };
    });
    if (!this.syntaxErrors.length) this.syntaxErrors.push(...this.structureErrors());
    this.data = this.syntaxErrors.length ? undefined : this.toData();
  }

  /** What YAML allows but a config cannot mean: non-string keys, aliases without anchors. */
  private structureErrors(): Diagnostic[] {
    const found: Diagnostic[] = [];
    const at = (node: Node | null | undefined, message: string) => {
      const p = this.counter!.linePos(node?.range?.[0] ?? 0);
      found.push({ file: this.file, line: p.line, col: p.col, severity: 'error', message });
    };
    const anchors = new Set<string>();
    const { isAlias, isScalar, visit } = yaml();
    visit(this.doc!, {
      Node: (_, node) => {
        if ('anchor' in node && typeof node.anchor === 'string') anchors.add(node.anchor);
        if (isAlias(node) && !anchors.has(node.source)) at(node, `alias *${node.source} refers to no earlier anchor`);
      },
      Pair: (_, pair) => {
        if (pair.key !== null && !isScalar(pair.key)) at(pair.key as Node, 'mapping keys must be plain strings');
      },
    });
    return found;
  }

  private toData(): unknown {
    try {
      return this.doc!.toJS({ maxAliasCount: 100 });
    } catch (e) {
      this.syntaxErrors.push({ file: this.file, line: 1, col: 1, severity: 'error', message: (e as Error).message });
      return undefined;
    }
  }

  /** Where the node at `path` is; `key` points at its key instead of its value. The nearest existing ancestor is used for missing paths. */
  position(path: Path, at: 'key' | 'value' = 'value'): { line: number; col: number } {
    if (!this.doc || !this.counter) return { line: 1, col: 1 };
    const { isMap, isPair, isScalar, isSeq } = yaml();
    let node: unknown = this.doc.contents;
    let keyNode: Node | undefined;
    for (const part of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(part));
        if (!pair) break;
        keyNode = pair.key as Node;
        node = pair.value ?? pair.key;
      } else if (isSeq(node) && typeof part === 'number' && node.items[part] !== undefined) {
        keyNode = undefined;
        node = node.items[part];
      } else break;
    }
    const target = at === 'key' && keyNode ? keyNode : (node as Node | null);
    const offset = target?.range?.[0] ?? 0;
    return this.counter.linePos(offset);
  }

  diag(severity: Severity, path: Path, message: string, at: 'key' | 'value' = 'value'): Diagnostic {
    const { line, col } = this.position(path, at);
    return { file: this.file, line, col, severity, message };
  }

  where(path: Path): string {
    const { line, col } = this.position(path);
    return `${line}:${col}`;
  }
}
