import { Command, CommanderError, Option } from 'commander';
import { hostname } from 'node:os';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { formatDiagnostic, hasErrors, sortDiagnostics } from '../config/diagnostics.js';
import { KeyError, readKeys, rotateKeyFile, writeKey } from '../config/key.js';
import { DEFAULT_CONFIG, loadConfig } from '../config/load.js';
import { nodeNamed, UnknownNodeError, type Config } from '../config/model.js';
import { EncodeError } from '../cluster/protocol.js';
import { askDaemon, type Request } from '../daemon/control.js';
import { Daemon } from '../daemon/daemon.js';
import { bootIncarnation, DEFAULT_INCARNATION_FILE } from '../daemon/incarnation.js';
import { systemdNotifier } from '../daemon/sdnotify.js';
import { formatTable, type EgressRow } from '../daemon/status.js';
import { formatStatus, type StatusReply } from '../daemon/status-text.js';
import { hostFacts } from '../dataplane/facts.js';
import { park } from '../dataplane/park.js';
import { release, reconcile } from '../dataplane/reconcile.js';
import { StateStore } from '../dataplane/state.js';
import { missingCgroups, plan, PlanError, type Owners } from '../plan/desired.js';
import { renderTable } from '../plan/nft.js';
import { parseAddress, formatAddress } from '../util/ip.js';

/** Exit codes: 0 success, 1 the host could not be changed, 2 bad input (config or arguments). */
const EXIT_RUNTIME = 1;
const EXIT_INPUT = 2;
const DEFAULT_KEY = '/etc/egress-natd/cluster.key';

class InputError extends Error {}

/** What to do after each step of a key rotation (README.md, "Key rotation"). */
const ROTATION_NEXT = {
  rotate:
    'step 1 of 3: a new key that only verifies; copy this file to every host and reload each, then run keygen --promote',
  promote:
    'step 2 of 3: the new key signs, the old one still verifies; copy this file to every host and reload each, then run keygen --retire',
  retire: 'step 3 of 3: the old key is gone; copy this file to every host and reload each',
} as const;

const out = (line: string): void => void process.stdout.write(`${line}\n`);
const err = (line: string): void => void process.stderr.write(`${line}\n`);

/** Loads and validates; prints every diagnostic; exits 2 on errors. */
function loadOrExit(file: string): Config {
  const { config, diagnostics } = loadConfig(file);
  for (const d of sortDiagnostics(diagnostics)) err(formatDiagnostic(d));
  if (!config || hasErrors(diagnostics)) process.exit(EXIT_INPUT);
  return config;
}

function parseOwners(values: readonly string[]): Owners {
  const owners = new Map<string, string>();
  for (const v of values) {
    const m = /^([^=]+)=(.+)$/.exec(v);
    const ip = m && parseAddress(m[1]!);
    if (!m || !ip?.ok) throw new InputError(`--owner ${v}: expected IP=NODE, e.g. --owner 192.168.1.100=worker1`);
    const text = formatAddress(ip.value);
    if (owners.has(text)) throw new InputError(`--owner ${v}: ${text} already has an owner`);
    owners.set(text, m[2]!);
  }
  return owners;
}

function planFor(config: Config, opts: { node?: string; owner: string[] }) {
  const node = opts.node ?? hostname();
  const facts = hostFacts(config);
  const desired = plan(config, node, parseOwners(opts.owner), facts);
  for (const c of missingCgroups(config, node, facts))
    err(
      `warning: cgroup ${c} does not exist on this host; its traffic is not selected until it does and apply runs again`,
    );
  return desired;
}

const stateStore = (dir?: string): StateStore => new StateStore(dir);
const logger = () => pino({ base: { svc: 'egress-natd' } }, pino.destination(2));

export function program(): Command {
  const cmd = new Command('egress-natd')
    .description('Deterministic, highly available egress IPs for bare-metal Linux fleets')
    .version('0.1.0')
    .exitOverride()
    .showHelpAfterError();
  const configOpt = () => new Option('-c, --config <file>', 'config file').default(DEFAULT_CONFIG);
  const nodeOpt = () => new Option('-n, --node <name>', "this host's node name (default: the hostname)");
  const ownerOpt = () => new Option('--owner <ip=node...>', 'static owner of a floating IP (repeatable)').default([]);
  const stateOpt = () =>
    new Option('--state-dir <dir>', 'where egress-natd keeps what it must undo (default /run/egress-natd)');

  cmd
    .command('check')
    .description('validate the config: exit 0, or 2 with every error as FILE:LINE:COL')
    .addOption(configOpt())
    .action((o: { config: string }) => {
      const config = loadOrExit(o.config);
      out(
        `${o.config}: ok (${config.nodes.length} nodes, ${config.gateways.length} gateways, ${config.policies.length} policies)`,
      );
    });

  cmd
    .command('plan')
    .description('print the data plane this node would install, given those owners; changes nothing')
    .addOption(configOpt())
    .addOption(nodeOpt())
    .addOption(ownerOpt())
    .addOption(
      new Option('-o, --output <format>', 'nft: what nft -f takes; json: the whole desired state')
        .choices(['nft', 'json'])
        .default('nft'),
    )
    .action((o: { config: string; node?: string; owner: string[]; output: 'nft' | 'json' }) => {
      const desired = planFor(loadOrExit(o.config), o);
      process.stdout.write(o.output === 'nft' ? renderTable(desired.nft) : `${JSON.stringify(desired, null, 2)}\n`);
    });

  cmd
    .command('apply')
    .description('static mode: converge this host to the plan once and exit')
    .addOption(configOpt())
    .addOption(nodeOpt())
    .addOption(ownerOpt())
    .addOption(stateOpt())
    .option('--no-garp', 'do not send gratuitous ARP for added addresses')
    .action(async (o: { config: string; node?: string; owner: string[]; stateDir?: string; garp: boolean }) => {
      const desired = planFor(loadOrExit(o.config), o);
      const started = process.hrtime.bigint();
      const { changes } = await reconcile(desired, { state: stateStore(o.stateDir), log: logger(), noGarp: !o.garp });
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (changes.length === 0) out(`no change: node ${desired.node} already matches the plan`);
      else {
        for (const c of changes) out(c);
        out(
          `applied ${changes.length} change${changes.length === 1 ? '' : 's'} to node ${desired.node} in ${ms.toFixed(0)} ms`,
        );
      }
    });

  cmd
    .command('release')
    .description(
      'uninstall: remove everything egress-natd installed on this host and restore the sysctls it changed; ' +
        'with --keep-steering, only give up the floating IPs (what systemd runs after the daemon ended)',
    )
    .addOption(stateOpt())
    .option(
      '--keep-steering',
      "keep steering this host's selected traffic (to the floating IPs' next holders, or dropped), so that none leaves without SNAT while no daemon runs",
    )
    .addOption(configOpt())
    .addOption(nodeOpt())
    .action(async (o: { stateDir?: string; keepSteering?: boolean; config: string; node?: string }) => {
      const opts = { state: stateStore(o.stateDir), log: logger() };
      let config: Config | undefined;
      if (o.keepSteering) {
        const loaded = loadConfig(o.config);
        for (const d of sortDiagnostics(loaded.diagnostics)) err(formatDiagnostic(d));
        if (!hasErrors(loaded.diagnostics)) config = loaded.config;
      }
      const parked = o.keepSteering ? await park(config, o.node ?? hostname(), opts) : undefined;
      const { changes } = parked ?? (await release(opts));
      for (const c of changes) out(c);
      const n = changes.length;
      out(n ? `released: ${n} change${n === 1 ? '' : 's'}` : 'nothing to release');
      if (parked) out(`steering ${parked.steering}`);
    });

  cmd
    .command('run')
    .description('the daemon: heartbeats, election, and the data plane kept in line with them')
    .addOption(configOpt())
    .addOption(nodeOpt())
    .addOption(stateOpt())
    .addOption(
      new Option(
        '--incarnation-file <file>',
        `where the last incarnation is kept across restarts and reboots (default ${DEFAULT_INCARNATION_FILE})`,
      ).env('EGRESS_NATD_INCARNATION_FILE'),
    )
    .action(async (o: { config: string; node?: string; stateDir?: string; incarnationFile?: string }) => {
      const config = loadOrExit(o.config);
      const node = o.node ?? hostname();
      try {
        nodeNamed(config, node);
      } catch (e) {
        throw e instanceof UnknownNodeError ? new InputError(`${e.message}; use --node`) : e;
      }
      const log = pino({ base: { svc: 'egress-natd' } }, pino.destination(1));
      const notifier = await systemdNotifier(process.env, (e) => log.warn({ err: e.message }, 'sd_notify'));
      // Before the daemon exists, so before its first heartbeat.
      const boot = bootIncarnation(o.incarnationFile ?? DEFAULT_INCARNATION_FILE, BigInt(Date.now()) * 1000n);
      for (const p of boot.problems) log.error(p);
      const daemon = new Daemon({
        incarnation: boot.incarnation,
        config,
        node,
        key: readKeys(config.cluster.heartbeat.keyFile),
        stateDir: stateStore(o.stateDir).dir,
        log,
        notifier,
      });
      let stopping = false;
      // Before start(): SIGHUP's default action would kill the daemon.
      process.on('SIGHUP', () => {
        if (stopping) return;
        log.info({ signal: 'SIGHUP', file: config.file }, 'signal received: reloading the config');
        void daemon.reload();
      });
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        log.info({ signal }, 'signal received');
        daemon.stop().then(
          () => process.exit(0),
          (e: Error) => {
            log.error({ err: e.message }, 'stop failed');
            process.exit(EXIT_RUNTIME);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      await daemon.start();
    });

  const ask = (req: Request, stateDir?: string) => askDaemon(stateStore(stateDir).dir, req);
  cmd
    .command('status')
    .description('from the running daemon: nodes, owners of floating IPs, policies, failovers, config digests')
    .addOption(stateOpt())
    .addOption(new Option('-o, --output <format>', 'output format').choices(['yaml', 'json', 'text']).default('yaml'))
    .action(async (o: { stateDir?: string; output: 'yaml' | 'json' | 'text' }) => {
      const s = await ask({ cmd: 'status' }, o.stateDir);
      const text = {
        json: () => `${JSON.stringify(s, null, 2)}\n`,
        yaml: () => stringify(s),
        text: () => formatStatus(s as StatusReply),
      };
      process.stdout.write(text[o.output]());
    });
  cmd
    .command('egress')
    .description('egress list: what this node steers where')
    .command('list')
    .addOption(stateOpt())
    .action(async (o: { stateDir?: string }) => {
      process.stdout.write(formatTable((await ask({ cmd: 'egress-list' }, o.stateDir)) as EgressRow[]));
    });
  for (const [name, what] of [
    ['drain', "hand this node's floating IPs over gracefully and take none"],
    ['undrain', 'take part in the election again'],
  ] as const) {
    cmd
      .command(name)
      .description(what)
      .addOption(stateOpt())
      .action(async (o: { stateDir?: string }) => {
        out(JSON.stringify(await ask({ cmd: name }, o.stateDir)));
      });
  }

  cmd
    .command('keygen')
    .description('write a new cluster key (mode 0600); copy the same key to every host')
    .argument('[file]', 'where to write it', DEFAULT_KEY)
    .option(
      '--force',
      'replace an existing key (do it on every host: nodes with different keys cannot hear each other)',
    )
    .addOption(
      new Option('--rotate', 'key rotation, step 1 of 3: add a new key that only verifies').conflicts([
        'force',
        'promote',
        'retire',
      ]),
    )
    .addOption(
      new Option('--promote', 'key rotation, step 2 of 3: the new key signs, the old one still verifies').conflicts([
        'force',
        'retire',
      ]),
    )
    .addOption(new Option('--retire', 'key rotation, step 3 of 3: drop the old key').conflicts('force'))
    .action((file: string, o: { force?: boolean; rotate?: boolean; promote?: boolean; retire?: boolean }) => {
      const step = o.rotate ? 'rotate' : o.promote ? 'promote' : o.retire ? 'retire' : undefined;
      if (!step) {
        writeKey(file, o.force);
        return out(`wrote a new cluster key to ${file} (mode 0600)`);
      }
      const keys = rotateKeyFile(file, step);
      out(`${file}: ${keys.length} key${keys.length === 1 ? '' : 's'} (${ROTATION_NEXT[step]})`);
    });
  return cmd;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await program().parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : EXIT_INPUT);
    if (
      e instanceof InputError ||
      e instanceof UnknownNodeError ||
      e instanceof PlanError ||
      e instanceof EncodeError ||
      e instanceof KeyError
    ) {
      err(`egress-natd: ${e.message}`);
      process.exit(EXIT_INPUT);
    }
    err(`egress-natd: ${(e as Error).message}`);
    process.exit(EXIT_RUNTIME);
  }
}
