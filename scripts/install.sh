#!/bin/bash
# make install / make uninstall. Honours DESTDIR and PREFIX (default /usr/local).
#   scripts/install.sh install [--files-only]   program, unit, example config, key (--files-only: no /etc)
#   scripts/install.sh uninstall            stop, `egress-natd release`, remove program and unit; /etc/egress-natd stays
# Config and key live in /etc/egress-natd whatever PREFIX is (the systemd unit reads them there).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BINDIR=$PREFIX/bin
LIBDIR=$PREFIX/lib/egress-natd
UNITDIR=$PREFIX/lib/systemd/system
DOCDIR=$PREFIX/share/doc/egress-natd
SHAREDIR=$PREFIX/share/egress-natd
ETCDIR=/etc/egress-natd
say() { echo "  $*"; }

# Production dependencies only, installed from the lock file into a staging folder.
prod_modules() {
  local stage=build/prod
  if [ ! -e "$stage/node_modules/.package-lock.json" ] || [ package-lock.json -nt "$stage/node_modules/.package-lock.json" ]; then
    rm -rf "$stage" && mkdir -p "$stage"
    cp package.json package-lock.json "$stage/"
    (cd "$stage" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
  fi
  echo "$stage/node_modules"
}

install_files() {
  [ -f dist/src/cli/main.js ] || { echo "install: run 'make build' first" >&2; exit 1; }
  local modules; modules=$(prod_modules)
  install -d "$DESTDIR$LIBDIR" "$DESTDIR$BINDIR" "$DESTDIR$UNITDIR" "$DESTDIR$DOCDIR" "$DESTDIR$SHAREDIR"
  rm -rf "$DESTDIR$LIBDIR/dist" "$DESTDIR$LIBDIR/node_modules"
  mkdir -p "$DESTDIR$LIBDIR/dist" "$DESTDIR$LIBDIR/bin"
  cp -r dist/src "$DESTDIR$LIBDIR/dist/src"
  cp -r "$modules" "$DESTDIR$LIBDIR/node_modules"
  install -m 0644 package.json "$DESTDIR$LIBDIR/package.json"
  install -m 0755 bin/egress-natd "$DESTDIR$LIBDIR/bin/egress-natd"
  # The command: node from PATH (NodeSource's nodejs >= 20 on Debian), on the installed tree.
  # A 1 MB young generation: the daemon allocates little, and V8's default (16 MB
  # semi-spaces) only raised its peak RSS by 15 MB at start-up (BENCHMARKS.md). The lab
  # starts its daemons with the same flags (lab/paths.ts, DAEMON_NODE_FLAGS).
  cat >"$DESTDIR$BINDIR/egress-natd" <<SH
#!/bin/sh
exec node --max-semi-space-size=1 "$LIBDIR/bin/egress-natd" "\$@"
SH
  chmod 0755 "$DESTDIR$BINDIR/egress-natd"
  sed "s|/usr/bin/egress-natd|$BINDIR/egress-natd|g; s|/usr/share/doc/egress-natd|$DOCDIR|g" systemd/egress-natd.service >"$DESTDIR$UNITDIR/egress-natd.service"
  chmod 0644 "$DESTDIR$UNITDIR/egress-natd.service"
  install -m 0644 README.md "$DESTDIR$DOCDIR/README.md"
  install -m 0644 config/config.yaml "$DESTDIR$SHAREDIR/config.example.yaml"
  say "program  $DESTDIR$LIBDIR, $DESTDIR$BINDIR/egress-natd"
  say "unit     $DESTDIR$UNITDIR/egress-natd.service"
}

install_config() {
  install -d "$DESTDIR$ETCDIR"
  if [ -e "$DESTDIR$ETCDIR/config.yaml" ]; then
    say "config   $DESTDIR$ETCDIR/config.yaml exists: left as it is"
  else
    install -m 0644 config/config.yaml "$DESTDIR$ETCDIR/config.yaml"
    say "config   $DESTDIR$ETCDIR/config.yaml (example: edit it, then copy it to every host)"
  fi
}

install_key() {
  if [ -e "$DESTDIR$ETCDIR/cluster.key" ]; then
    say "key      $DESTDIR$ETCDIR/cluster.key exists: left as it is"
  else
    node "$DESTDIR$LIBDIR/bin/egress-natd" keygen "$DESTDIR$ETCDIR/cluster.key" >/dev/null
    say "key      $DESTDIR$ETCDIR/cluster.key (new; copy this same key to every host)"
  fi
}

case "${1:-}" in
  install)
    install_files
    [ "${2:-}" = --files-only ] && exit 0
    install_config
    install_key
    ;;
  uninstall)
    # The uninstall of a live host (no DESTDIR): stop the daemon (it hands its IPs over),
    # then remove the steering a stopped daemon keeps and restore the sysctls.
    if [ -z "$DESTDIR" ] && [ -x "$BINDIR/egress-natd" ]; then
      if [ -d /run/systemd/system ]; then systemctl stop egress-natd.service 2>/dev/null || true; fi
      "$BINDIR/egress-natd" release || true
    fi
    rm -rf "$DESTDIR$LIBDIR" "$DESTDIR$DOCDIR" "$DESTDIR$SHAREDIR"
    rm -f "$DESTDIR$BINDIR/egress-natd" "$DESTDIR$UNITDIR/egress-natd.service"
    say "removed the program and the unit; $DESTDIR$ETCDIR (config, key) is kept"
    ;;
  *) echo "usage: $0 install [--files-only] | uninstall" >&2; exit 2 ;;
esac
