import { readFileSync } from 'node:fs';
import { eachAttribute, eachMessage } from './netlink-dump.js';
import netlink from './netlink-lib.js';
import type { RawSocket } from './netlink-pool.js';

// When an nft transaction has committed, before nft exits. A transaction that deletes
// anything (a rule replaced, a set gone) leaves the kernel work to free it after an RCU
// grace period, and nft's exit waits for that work (closing its netlink socket runs
// nf_tables' release notifier, which flushes it): 10 to 20 ms here, after the commit
// itself took 3 to 7 (measured with `nft --echo`). A take-over waited for it twice.
//
// The kernel announces every commit to the nf_tables multicast group with the committing
// process's pid (NFT_MSG_NEWGEN, NFTA_GEN_PROC_PID). While a transaction of ours runs, a
// socket of the daemon listens to that group; the new generation of nft's pid is the
// commit. Only around our own transactions: a listener makes the kernel build an event
// per set element of everyone's transactions. Nothing heard (a lost event, a process in a
// pid namespace of its own, a fake nft in tests) leaves nft's exit to tell.

const NFNLGRP_NFTABLES = 7;
/** NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN. */
const NEWGEN = (10 << 8) | 15;
const NFTA_GEN_PROC_PID = 2;
/** nfgenmsg (family, version, resource id) before the attributes. */
const NFGENMSG = 4;

/**
 * The kernel names the committer by its pid in the initial pid namespace: a daemon in a
 * pid namespace of its own (a container) knows its children by other numbers, and must
 * not take another process's commit for its own.
 */
function inInitialPidNamespace(): boolean {
  try {
    const nspid = /^NSpid:\s*(.*)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    return nspid !== undefined && nspid.trim().split(/\s+/).length === 1;
  } catch {
    return false;
  }
}

let socket: RawSocket | undefined | null;
const waiting = new Map<number, () => void>();
let heard = 0;

/** Transactions of ours whose commit was heard before nft exited (for tests and curious readers). */
export const commitsHeard = (): number => heard;

function onDatagram(b: Buffer): void {
  try {
    eachMessage(b, (type, _seq, start, end) => {
      if (type !== NEWGEN) return;
      eachAttribute(b, start + NFGENMSG, end, (t, from, to) => {
        const pid = t === NFTA_GEN_PROC_PID && to - from >= 4 ? b.readUInt32BE(from) : undefined;
        const done = pid === undefined ? undefined : waiting.get(pid);
        if (!done) return;
        waiting.delete(pid!);
        heard++;
        done();
      });
    });
  } catch {
    // Not a message we can read: that commit is told by nft's exit.
  }
}

/** The listening socket, opened once and never closed (a close waits for nf_tables: netlink-pool.ts); null where it cannot be. */
function listener(): RawSocket | null {
  if (socket !== undefined) return socket;
  socket = null;
  if (!inInitialPidNamespace()) return socket;
  try {
    const s = new netlink.RawNetlinkSocket(netlink.Protocol.NETFILTER, {
      recvBufferSize: 1 << 20,
      sendBufferSize: 4096,
    });
    // ENOBUFS (someone's big transaction overflowed it): the commits missed are told by exits.
    s.on('error', () => undefined);
    s.on('message', (b: Buffer) => onDatagram(b));
    s.unref();
    socket = s;
  } catch {
    // No netlink here: exits tell.
  }
  return socket;
}

/** A wait for the commit of one process's transaction, listening from now on; `end()` stops it. */
export interface CommitWait {
  /** Resolves when `pid` commits (never, if that is not heard). Call right after starting it. */
  of(pid: number | undefined): Promise<void>;
  end(): void;
}

/** Waits under way: the socket is in the group while there is one. */
let listening = 0;

function setMembership(s: RawSocket, join: boolean): void {
  try {
    if (join) s.addMembership(NFNLGRP_NFTABLES);
    else s.dropMembership(NFNLGRP_NFTABLES);
  } catch {
    // Exits tell.
  }
}

/** Starts listening for commits: before the transaction's process starts, so that its commit cannot be missed. */
export function awaitCommit(): CommitWait {
  const s = listener();
  if (s && listening++ === 0) setMembership(s, true);
  let pid: number | undefined;
  let ended = false;
  return {
    of(p) {
      pid = p;
      return new Promise((resolve) => {
        if (s && p !== undefined && !ended) waiting.set(p, resolve);
      });
    },
    end() {
      if (ended) return;
      ended = true;
      if (pid !== undefined) waiting.delete(pid);
      if (s && --listening === 0) setMembership(s, false);
    },
  };
}
