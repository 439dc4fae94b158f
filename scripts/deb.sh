#!/bin/bash
# make deb: build/egress-natd_<version>_<arch>.deb, installing under /usr. `lintian` finds
# nothing in it but what packaging/deb/lintian-overrides explains.
# The package ships no config and no key: postinst creates them on the host (a key in a
# package would be the same key on every cluster that installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(node -p "require('./package.json').version")
arch=$(dpkg --print-architecture)   # the native addons (netlink, node-unix-socket) are per architecture
# Set DEB_MAINTAINER to a real address for a package you publish.
maintainer=${DEB_MAINTAINER:-egress-natd developers <egress-natd@localhost>}
root=build/deb/root
doc=$root/usr/share/doc/egress-natd
modules=$root/usr/lib/egress-natd/node_modules
rm -rf build/deb && mkdir -p "$root/DEBIAN"
DESTDIR="$PWD/$root" PREFIX=/usr scripts/install.sh install --files-only >/dev/null
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"

# The npm dependencies as Debian wants shipped files: the native addons for this
# architecture only (netlink carries prebuilt ones for four), stripped and not executable;
# no other file executable unless it is a script; no VCS files; no web page of a module's
# documentation (pino's loads scripts from CDNs).
case "$arch" in amd64) node_arch=x64 ;; i386) node_arch=ia32 ;; armhf) node_arch=arm ;; *) node_arch=$arch ;; esac
find "$modules" -path '*/prebuilds/*' -mindepth 1 -maxdepth 4 -type d -name 'linux-*' ! -name "linux-$node_arch" -prune -exec rm -rf {} +
find "$modules" -type f -name '*.node' -exec strip --strip-unneeded --remove-section=.comment --remove-section=.note {} + -exec chmod 0644 {} +
find "$modules" -type f -perm /111 ! -name '*.node' -print0 | while IFS= read -r -d '' f; do
  if [ "$(head -c2 "$f")" != '#!' ]; then chmod a-x "$f"; fi
done
find "$modules" -type f -name '*.js' ! -perm /111 -print0 | while IFS= read -r -d '' f; do
  if [ "$(head -c2 "$f")" = '#!' ]; then chmod a+x "$f"; fi
done
find "$modules" \( -name '.git*' -o -name '.npmignore' -o -name '*.html' \) -type f -delete

# A native package's changelog and the copyright of what it bundles, both in /usr/share/doc.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
date=$(date -R -d "@$epoch")
year=$(date -u +%Y -d "@$epoch")
printf 'egress-natd (%s) unstable; urgency=medium\n\n  * Release %s: see /usr/share/doc/egress-natd/README.md.\n\n -- %s  %s\n' \
  "$version" "$version" "$maintainer" "$date" | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
{
  cat <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: egress-natd

Files: *
Copyright: $year egress-natd developers
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
  # Each bundled npm package under its own license, whose text it ships next to its code.
  for pj in "$modules"/*/package.json "$modules"/@*/*/package.json "$modules"/*/node_modules/*/package.json "$modules"/*/node_modules/@*/*/package.json; do
    [ -f "$pj" ] || continue
    dir=${pj%/package.json}
    node -e '
      const p = require(process.argv[1]);
      const license = typeof p.license === "string" ? p.license : "see its package.json";
      const author = typeof p.author === "string" ? p.author : (p.author && p.author.name) || "its authors";
      console.log(`\nFiles: ${process.argv[2]}/*\nCopyright: ${author}\nLicense: ${license}\n The text is in the files LICENSE* of ${process.argv[2]}.`);
    ' "$PWD/$pj" "${dir#"$root"/}"
  done
} >"$doc/copyright"
chmod 0644 "$doc/copyright"
install -D -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/egress-natd"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
# procps: the unit's ExecReload is /bin/kill, which minimal Debian 13 systems lack (the machines
# lab found it). libc6, libgcc-s1, libstdc++6: what the native addons link (objdump -p, -T).
cat >"$root/DEBIAN/control" <<CONTROL
Package: egress-natd
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: nodejs (>= 20), nftables, iproute2, iputils-arping, procps, libc6 (>= 2.14), libgcc-s1, libstdc++6
Section: net
Priority: optional
Homepage: https://example.invalid/egress-natd
Description: deterministic, highly available egress IPs for bare-metal Linux
 A daemon on every host elects, with authenticated VRRP-style heartbeats,
 which host owns each floating egress IP; the owner adds it, announces it
 with gratuitous ARP and SNATs selected traffic to it; every host steers its
 selected traffic there with policy routing and nftables, from one
 declarative file in /etc/egress-natd.
CONTROL
out="build/egress-natd_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
