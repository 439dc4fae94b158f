import netlink from './netlink-lib.js';
import type { RtNetlinkSocket } from './netlink-lib.js';
import { addressBytes, formatAddress, parseAddress } from '../util/ip.js';

// A thin adapter over rtnetlink (the `netlink` package): plain records in, plain
// records out, so the reconciler never sees the library's encodings.

const NLM_F_CREATE = 0x400;
const NLM_F_EXCL = 0x200;
const NLM_F_REPLACE = 0x100;
const AF_INET = 2;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const IFLA_MACVLAN_MODE = 1;
const MACVLAN_MODE_BRIDGE = 4;
const RTNH_F_ONLINK = 4;

export interface Link {
  index: number;
  name: string;
  kind?: string;
  mac: string;
  parent?: number;
  up: boolean;
  /** IFF_LOWER_UP: the link has carrier. */ carrier: boolean;
}
export interface LinkAddress {
  index: number;
  address: string;
  prefix: number;
}
export interface KernelRule {
  priority: number;
  fwmark: number;
  fwmask: number;
  table: number;
  protocol: number;
}
export interface KernelRoute {
  table: number;
  gateway?: string;
  oif?: number;
  /** The destination network (absent for a default route). */
  dst?: string;
  dstLen: number;
  protocol: number;
}

export class NetlinkError extends Error {
  constructor(
    readonly operation: string,
    cause: unknown,
  ) {
    super(`netlink ${operation}: ${(cause as Error).message ?? String(cause)}`);
  }
}

export function attr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const b = Buffer.alloc((len + 3) & ~3);
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};

const macText = (b?: Buffer): string => (b ? [...b].map((x) => x.toString(16).padStart(2, '0')).join(':') : '');
const macBytes = (mac: string): Buffer => Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
const ipBytes = (ip: string): Buffer => {
  const a = parseAddress(ip);
  if (!a.ok) throw new Error(a.error);
  return addressBytes(a.value);
};
const ipText = (b?: Buffer): string | undefined =>
  b && b.length === 4 ? formatAddress({ family: 4, value: BigInt(b.readUInt32BE(0)) }) : undefined;

export class Netlink {
  private readonly sock: RtNetlinkSocket;

  constructor() {
    this.sock = netlink.createRtNetlink();
  }

  close(): void {
    this.sock.socket.close();
  }

  private async run<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new NetlinkError(operation, e);
    }
  }

  async links(): Promise<Link[]> {
    const msgs = await this.run('list links', () => this.sock.getLinks());
    return msgs.map((m) => {
      const kind = m.attrs.linkinfo ? netlink.ifla.parseInfo(m.attrs.linkinfo).kind : undefined;
      return {
        index: m.data.index!,
        name: m.attrs.ifname ?? '',
        ...(kind ? { kind } : {}),
        mac: macText(m.attrs.address),
        // IFLA_LINK arrives as the raw u32 attribute.
        ...(m.attrs.link !== undefined ? { parent: Buffer.from(m.attrs.link).readUInt32LE(0) } : {}),
        up: Boolean(m.data.flags?.up),
        carrier: Boolean(m.data.flags?.lowerUp),
      };
    });
  }

  async addMacvlan(name: string, parentIndex: number, mac: string): Promise<void> {
    const linkinfo = Buffer.concat([
      attr(IFLA_INFO_KIND, Buffer.from('macvlan\0')),
      attr(IFLA_INFO_DATA, attr(IFLA_MACVLAN_MODE, u32(MACVLAN_MODE_BRIDGE))),
    ]);
    await this.run(`add macvlan ${name}`, () =>
      this.sock.newLink(
        {},
        { ifname: name, link: u32(parentIndex), address: macBytes(mac), linkinfo },
        { flags: NLM_F_CREATE | NLM_F_EXCL },
      ),
    );
  }

  async setUp(index: number, name: string): Promise<void> {
    await this.run(`set ${name} up`, () => this.sock.setLink({ index, flags: { up: true }, change: { up: true } }));
  }

  async deleteLink(index: number, name: string): Promise<void> {
    await this.run(`delete link ${name}`, () => this.sock.delLink({ index }));
  }

  async addresses(): Promise<LinkAddress[]> {
    const msgs = await this.run('list addresses', () => this.sock.getAddresses({ family: AF_INET }));
    return msgs.flatMap((m) => {
      const address = ipText(m.attrs.local ?? m.attrs.address);
      return address ? [{ index: m.data.index!, address, prefix: m.data.prefixlen! }] : [];
    });
  }

  async addAddress(index: number, address: string, prefix: number): Promise<void> {
    const b = ipBytes(address);
    await this.run(`add address ${address}/${prefix}`, () =>
      this.sock.newAddress(
        { family: AF_INET, prefixlen: prefix, index },
        { local: b, address: b },
        { flags: NLM_F_CREATE | NLM_F_EXCL },
      ),
    );
  }

  async deleteAddress(index: number, address: string, prefix: number): Promise<void> {
    const b = ipBytes(address);
    await this.run(`delete address ${address}/${prefix}`, () =>
      this.sock.delAddress({ family: AF_INET, prefixlen: prefix, index }, { local: b, address: b }),
    );
  }

  /**
   * Deletes the neighbour entry of `ip` on the interface `index`, and with it the packets
   * queued for it while it resolves; false when there is none.
   */
  async deleteNeighbor(index: number, ip: string): Promise<boolean> {
    try {
      await this.sock.delNeighbor({ family: AF_INET, ifindex: index }, { dst: ipBytes(ip) });
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || /ENOENT|No such file/.test(String(e))) return false;
      throw new NetlinkError(`delete neighbour ${ip}`, e);
    }
  }

  async rules(): Promise<KernelRule[]> {
    const msgs = await this.run('list rules', () => this.sock.getRules({ family: AF_INET }));
    return msgs.map((m) => ({
      priority: m.attrs.priority ?? 0,
      fwmark: m.attrs.fwmark ?? 0,
      fwmask: m.attrs.fwmask ?? 0,
      table: m.attrs.table ?? m.data.table ?? 0,
      protocol: m.attrs.protocol ?? 0,
    }));
  }

  async addRule(r: Omit<KernelRule, 'protocol'>, protocol: number): Promise<void> {
    await this.run(`add rule pref ${r.priority}`, () =>
      this.sock.newRule(
        { family: AF_INET, action: 'toTbl' },
        { priority: r.priority, fwmark: r.fwmark, fwmask: r.fwmask, table: r.table, protocol },
        { flags: NLM_F_CREATE | NLM_F_EXCL },
      ),
    );
  }

  async deleteRule(r: Omit<KernelRule, 'protocol'>): Promise<void> {
    await this.run(`delete rule pref ${r.priority}`, () =>
      this.sock.delRule(
        { family: AF_INET, action: 'toTbl' },
        { priority: r.priority, fwmark: r.fwmark, fwmask: r.fwmask, table: r.table },
      ),
    );
  }

  async routes(): Promise<KernelRoute[]> {
    const msgs = await this.run('list routes', () => this.sock.getRoutes({ family: AF_INET }));
    return msgs.map((m) => {
      const gateway = ipText(m.attrs.gateway);
      const dst = ipText(m.attrs.dst);
      return {
        table: m.attrs.table ?? m.data.table ?? 0,
        ...(gateway ? { gateway } : {}),
        ...(dst ? { dst } : {}),
        ...(m.attrs.oif !== undefined ? { oif: m.attrs.oif } : {}),
        dstLen: m.data.dstLen ?? 0,
        protocol:
          typeof m.data.protocol === 'number'
            ? m.data.protocol
            : Number(netlink.rt.RouteProtocol[m.data.protocol as keyof typeof netlink.rt.RouteProtocol] ?? 0),
      };
    });
  }

  /** Sets the table's default route to `via gateway dev oif onlink`, replacing any other. */
  async replaceDefaultRoute(table: number, gateway: string, oif: number, protocol: number): Promise<void> {
    await this.run(`replace default route in table ${table}`, () =>
      this.sock.newRoute(
        {
          family: AF_INET,
          dstLen: 0,
          table: 0,
          protocol: protocol,
          scope: 'UNIVERSE',
          type: 'UNICAST',
          flags: RTNH_F_ONLINK as never,
        },
        { table, gateway: ipBytes(gateway), oif },
        { flags: NLM_F_CREATE | NLM_F_REPLACE },
      ),
    );
  }

  /** Deletes a route as listed by routes(): its table, destination and, if it has them, gateway and device. */
  async deleteRoute(r: KernelRoute): Promise<void> {
    const what = `${r.dst ?? 'default'}/${r.dstLen}`;
    await this.run(`delete route ${what} in table ${r.table}`, () =>
      this.sock.delRoute(
        { family: AF_INET, dstLen: r.dstLen, table: 0, scope: 'NOWHERE' },
        {
          table: r.table,
          ...(r.dst ? { dst: ipBytes(r.dst) } : {}),
          ...(r.gateway ? { gateway: ipBytes(r.gateway) } : {}),
          ...(r.oif !== undefined ? { oif: r.oif } : {}),
        },
      ),
    );
  }

  async deleteDefaultRoute(table: number): Promise<void> {
    await this.run(`delete default route in table ${table}`, () =>
      this.sock.delRoute({ family: AF_INET, dstLen: 0, table: 0, scope: 'NOWHERE' }, { table }),
    );
  }
}
