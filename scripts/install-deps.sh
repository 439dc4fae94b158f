#!/usr/bin/env bash
# Installs what the lab and the daemon need on Debian, only where it is missing;
# with --test, also what only the tests need; with --bench, what only `make bench` needs.
set -euo pipefail
need=()
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v bridge >/dev/null || need+=(iproute2)
arping -V 2>&1 | grep -q iputils || need+=(iputils-arping)
command -v unshare >/dev/null || need+=(util-linux)
command -v setpriv >/dev/null || need+=(util-linux)
command -v sysctl >/dev/null || need+=(procps)
command -v timeout >/dev/null || need+=(coreutils)
command -v tcpdump >/dev/null || need+=(tcpdump)
if [ "${1:-}" = --test ]; then
  # What only the tests need: `vagrant validate` (with the libvirt provider), dpkg, systemd-analyze, faketime,
  # conntrack, mmdebstrap, systemd-nspawn, lintian.
  command -v vagrant >/dev/null || need+=(vagrant)
  dpkg -s vagrant-libvirt >/dev/null 2>&1 || need+=(vagrant-libvirt)
  command -v dpkg-deb >/dev/null || need+=(dpkg)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  # libfaketime: a daemon restarted with the clock an hour back (test/lab/incarnation.test.ts).
  command -v faketime >/dev/null || need+=(faketime)
  # conntrack: a test reads a host's connection tracking table (test/lab/takeover.test.ts).
  command -v conntrack >/dev/null || need+=(conntrack)
  # The machines lab (test/lab/machines.test.ts): Debian 13 root filesystems made by mmdebstrap,
  # booted with systemd-nspawn; lintian checks the .deb.
  command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
  command -v systemd-nspawn >/dev/null || need+=(systemd-container)
  command -v lintian >/dev/null || need+=(lintian)
fi
if [ "${1:-}" = --bench ]; then
  # The peers `make bench` measures against (bench/keepalived.ts, bench/throughput.ts) and the
  # load of its fast-mode soak (bench/fast.ts). Debian's keepalived unit starts only with a
  # non-empty /etc/keepalived/keepalived.conf, which nothing here writes: the bench runs its own,
  # inside the lab's namespaces.
  command -v keepalived >/dev/null || need+=(keepalived)
  command -v iperf3 >/dev/null || need+=(iperf3)
  command -v stress-ng >/dev/null || need+=(stress-ng)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "install-deps: need root to install: ${need[*]}" >&2; exit 1; fi
  echo "install-deps: apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
