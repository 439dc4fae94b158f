import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

// What egress-natd must remember across the end of a daemon: the values sysctls had
// before it changed them (so that `release` restores them), and the owners and mark
// indexes of the last plan applied (so that the steering can be kept, and taken over,
// while no daemon runs: docs/design.md, "Stop and start"). Written before each change,
// so that a crash never loses an original.

/** The inputs of the last plan applied on this host, besides the config. */
export interface AppliedPlan {
  readonly node: string;
  /** Floating IP → its owner; IPs without one are absent. */
  readonly owners: Readonly<Record<string, string>>;
  /** Floating IP → its mark index. */
  readonly indexes: Readonly<Record<string, number>>;
}

export interface HostState {
  /** sysctl path → the value it had before egress-natd set it. */
  readonly sysctls: Readonly<Record<string, string>>;
  /** Absent until a plan is applied, and after `release`. */
  readonly applied?: AppliedPlan;
}

export const DEFAULT_STATE_DIR = '/run/egress-natd';

export class StateStore {
  readonly file: string;

  constructor(readonly dir: string = process.env['EGRESS_NATD_STATE_DIR'] ?? DEFAULT_STATE_DIR) {
    this.file = join(dir, 'state.json');
  }

  async load(): Promise<HostState> {
    try {
      const parsed = JSON.parse(await readFile(this.file, 'utf8')) as Partial<HostState>;
      const a = parsed.applied;
      const isRecord = (x: unknown) => typeof x === 'object' && x !== null;
      // A record that is not what this version writes is ignored: parking then keeps what it finds.
      const applied =
        a && typeof a.node === 'string' && isRecord(a.owners) && isRecord(a.indexes) ? { applied: a } : {};
      return { sysctls: { ...(parsed.sysctls ?? {}) }, ...applied };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { sysctls: {} };
      throw new Error(`cannot read ${this.file}: ${(e as Error).message}`, { cause: e });
    }
  }

  async save(state: HostState): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, this.file);
  }

  async clear(): Promise<void> {
    await rm(this.file, { force: true });
  }
}
