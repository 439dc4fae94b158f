import type { Logger } from 'pino';
import { Netlink } from '../dataplane/netlink.js';
import { watchKernel, type KernelEvent, type Watcher } from '../dataplane/watch.js';
import { isOurRouteTable, MACVLAN_PREFIX, NFT_TABLE } from '../plan/naming.js';

// What the daemon learns from the kernel without asking: someone changed egress-natd's
// objects (repair them), or the cluster interface lost or regained carrier.

const REPAIR_DEBOUNCE_MS = 20;
const TABLE_IN_LINE = /\b(?:table|lookup) (\d+)\b/;

/** Whether a monitor line is about an object egress-natd owns. */
export function isAboutOurObjects(e: KernelEvent): boolean {
  if (e.source === 'nft') return e.line.includes(NFT_TABLE);
  return e.line.includes(MACVLAN_PREFIX) || isOurRouteTable(Number(TABLE_IN_LINE.exec(e.line)?.[1]));
}

/** Whether an `ip -o monitor` line is about link `name` ("7: eth0@if8: <...>" or "7: eth0: ..."). */
export function isAboutLink(line: string, name: string): boolean {
  const rest = /^\d+: /.exec(line) ? line.slice(line.indexOf(': ') + 2) : undefined;
  return rest !== undefined && (rest.startsWith(`${name}:`) || rest.startsWith(`${name}@`));
}

export async function readCarrier(iface: string): Promise<boolean> {
  const nl = new Netlink();
  try {
    const link = (await nl.links()).find((l) => l.name === iface);
    if (!link) throw new Error(`interface ${iface} does not exist`);
    return link.up && link.carrier;
  } finally {
    nl.close();
  }
}

export interface KernelWatchEvents {
  /** Someone changed egress-natd's objects: reconcile in full (debounced). */
  repair(): void;
  /** The cluster interface's carrier changed. */
  carrier(up: boolean): void;
}

export class KernelWatch {
  private watcher?: Watcher;
  private repairTimer?: NodeJS.Timeout;
  private carrier = true;

  constructor(
    private readonly iface: () => string,
    private readonly log: Logger,
    private readonly events: KernelWatchEvents,
  ) {}

  /** Starts the monitors; returns the interface's carrier now. */
  async start(): Promise<boolean> {
    this.carrier = await readCarrier(this.iface());
    this.watcher = watchKernel(
      (e) => this.onEvent(e),
      (e) => this.log.warn({ err: e.message }, 'kernel monitor'),
    );
    await this.watcher.ready;
    return this.carrier;
  }

  private onEvent(e: KernelEvent): void {
    if (e.source === 'ip' && isAboutLink(e.line, this.iface())) void this.checkCarrier();
    if (!isAboutOurObjects(e) || this.repairTimer) return;
    this.repairTimer = setTimeout(() => {
      this.repairTimer = undefined;
      this.events.repair();
    }, REPAIR_DEBOUNCE_MS);
  }

  private async checkCarrier(): Promise<void> {
    const carrier = await readCarrier(this.iface()).catch(() => false);
    if (carrier === this.carrier || !this.watcher) return;
    this.carrier = carrier;
    this.events.carrier(carrier);
  }

  close(): void {
    clearTimeout(this.repairTimer);
    this.watcher?.close();
    this.watcher = undefined;
  }
}
