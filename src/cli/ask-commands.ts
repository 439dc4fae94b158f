import { askDaemon, type Request } from '../daemon/control.js';
import { StateStore } from '../dataplane/state.js';
import type { Plain } from '../util/yaml-dump.js';
import { out } from './errors.js';

// The commands that ask the running daemon over its control socket: status, egress list,
// drain, undrain. They load no config, plan or kernel code: each run pays only for what
// it prints.

const ask = (req: Request, stateDir?: string) => askDaemon(new StateStore(stateDir).dir, req);

export async function status(o: { stateDir?: string; output: 'yaml' | 'json' | 'text' }): Promise<void> {
  const s = await ask({ cmd: 'status' }, o.stateDir);
  if (o.output === 'json') return void process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
  if (o.output === 'text') {
    const { formatStatus } = await import('../daemon/status-text.js');
    return void process.stdout.write(formatStatus(s as Parameters<typeof formatStatus>[0]));
  }
  const { dumpYaml } = await import('../util/yaml-dump.js');
  process.stdout.write(dumpYaml(s as Plain));
}

export async function egressList(o: { stateDir?: string }): Promise<void> {
  const { formatTable } = await import('../daemon/egress-table.js');
  process.stdout.write(
    formatTable((await ask({ cmd: 'egress-list' }, o.stateDir)) as Parameters<typeof formatTable>[0]),
  );
}

export async function tell(cmd: 'drain' | 'undrain', o: { stateDir?: string }): Promise<void> {
  out(JSON.stringify(await ask({ cmd }, o.stateDir)));
}
