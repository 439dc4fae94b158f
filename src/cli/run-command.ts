import { hostname } from 'node:os';
import { pino } from 'pino';
import { readKeys } from '../config/key.js';
import { nodeNamed, UnknownNodeError } from '../config/model.js';
import { Daemon } from '../daemon/daemon.js';
import { readConfigApart } from '../daemon/config-reader.js';
import { bootIncarnation } from '../daemon/incarnation.js';
import { systemdNotifier } from '../daemon/sdnotify.js';
import { raiseLoopPriority } from '../dataplane/priority.js';
import { StateStore } from '../dataplane/state.js';
import { EXIT_RUNTIME, InputError } from './errors.js';
import { loadedOrExit } from './loaded-or-exit.js';

/** `egress-natd run`: the daemon, with its signals. */
export async function run(o: { config: string; node?: string; stateDir?: string; incarnationFile: string }) {
  // Read in a process of its own: the parsers never enter the daemon's heap (config-reader.ts).
  const config = loadedOrExit(await readConfigApart(o.config));
  const node = o.node ?? hostname();
  try {
    nodeNamed(config, node);
  } catch (e) {
    throw e instanceof UnknownNodeError ? new InputError(`${e.message}; use --node`) : e;
  }
  const log = pino({ base: { svc: 'egress-natd' } }, pino.destination(1));
  // Before the daemon makes its threads and children: they run at nice 0 (priority.ts).
  // The runtime's own threads (V8's, the libuv pool) keep the loop's when the unit sets it.
  const raised = raiseLoopPriority();
  if ('error' in raised)
    log.warn(
      { node, nice: raised.from, err: raised.error },
      "heartbeats run at normal priority (the unit's Nice=-10, or CAP_SYS_NICE, lets them run higher)",
    );
  else log.info({ node, from: raised.from, to: raised.to }, `heartbeats run at nice ${raised.to}`);
  const notifier = await systemdNotifier(process.env, (e) => log.warn({ err: e.message }, 'sd_notify'));
  // Before the daemon exists, so before its first heartbeat.
  const boot = bootIncarnation(o.incarnationFile, BigInt(Date.now()) * 1000n);
  for (const p of boot.problems) log.error(p);
  const daemon = new Daemon({
    incarnation: boot.incarnation,
    config,
    node,
    key: readKeys(config.cluster.heartbeat.keyFile),
    stateDir: new StateStore(o.stateDir).dir,
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
}
