import { Command, CommanderError, Option } from 'commander';
import { DEFAULT_CONFIG, DEFAULT_INCARNATION_FILE, DEFAULT_KEY } from '../config/paths.js';
import { err, EXIT_INPUT, EXIT_RUNTIME } from './errors.js';

// The command line. Each command loads its own code when it runs (dynamic import), so
// that `--version`, `status` or `drain` do not pay for the config parser, the planner or
// the daemon: a CLI call costs little more than starting Node.

const hostCommands = () => import('./host-commands.js');
const askCommands = () => import('./ask-commands.js');

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
    .action(async (o: { config: string }) => (await hostCommands()).check(o));

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
    .action(async (o: { config: string; node?: string; owner: string[]; output: 'nft' | 'json' }) =>
      (await hostCommands()).printPlan(o),
    );

  cmd
    .command('apply')
    .description('static mode: converge this host to the plan once and exit')
    .addOption(configOpt())
    .addOption(nodeOpt())
    .addOption(ownerOpt())
    .addOption(stateOpt())
    .option('--no-garp', 'do not send gratuitous ARP for added addresses')
    .action(async (o: { config: string; node?: string; owner: string[]; stateDir?: string; garp: boolean }) =>
      (await hostCommands()).apply(o),
    );

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
    .action(async (o: { stateDir?: string; keepSteering?: boolean; config: string; node?: string }) =>
      (await hostCommands()).releaseHost(o),
    );

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
    .action(async (o: { config: string; node?: string; stateDir?: string; incarnationFile?: string }) =>
      (await import('./run-command.js')).run({ ...o, incarnationFile: o.incarnationFile ?? DEFAULT_INCARNATION_FILE }),
    );

  cmd
    .command('status')
    .description('from the running daemon: nodes, owners of floating IPs, policies, failovers, traffic, config digests')
    .addOption(stateOpt())
    .addOption(new Option('-o, --output <format>', 'output format').choices(['yaml', 'json', 'text']).default('yaml'))
    .action(async (o: { stateDir?: string; output: 'yaml' | 'json' | 'text' }) => (await askCommands()).status(o));
  cmd
    .command('egress')
    .description('egress list: what this node steers where')
    .command('list')
    .addOption(stateOpt())
    .action(async (o: { stateDir?: string }) => (await askCommands()).egressList(o));
  for (const [name, what] of [
    ['drain', "hand this node's floating IPs over gracefully and take none"],
    ['undrain', 'take part in the election again'],
  ] as const) {
    cmd
      .command(name)
      .description(what)
      .addOption(stateOpt())
      .action(async (o: { stateDir?: string }) => (await askCommands()).tell(name, o));
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
    .action(async (file: string, o: { force?: boolean; rotate?: boolean; promote?: boolean; retire?: boolean }) =>
      (await import('./keygen-command.js')).keygen(file, o),
    );
  return cmd;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await program().parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : EXIT_INPUT);
    err(`egress-natd: ${(e as Error).message}`);
    // The error classes live with the code that throws them; if even they cannot load, the message is out already.
    const input = await import('./input-errors.js').then(
      (m) => m.isInputError(e),
      () => false,
    );
    process.exit(input ? EXIT_INPUT : EXIT_RUNTIME);
  }
}
