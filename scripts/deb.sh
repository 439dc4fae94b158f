#!/bin/bash
# make deb: build/egress-natd_<version>_<arch>.deb, installing under /usr.
# The package ships no config and no key: postinst creates them on the host (a key in a
# package would be the same key on every cluster that installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(node -p "require('./package.json').version")
arch=$(dpkg --print-architecture)   # the native addons (netlink, node-unix-socket) are per architecture
root=build/deb/root
rm -rf build/deb && mkdir -p "$root/DEBIAN"
DESTDIR="$PWD/$root" PREFIX=/usr scripts/install.sh install --files-only >/dev/null
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
# procps: the unit's ExecReload is /bin/kill, which minimal Debian 13 systems lack (the machines lab found it).
cat >"$root/DEBIAN/control" <<CONTROL
Package: egress-natd
Version: $version
Architecture: $arch
Maintainer: egress-natd developers <egress-natd@localhost>
Installed-Size: $size
Depends: nodejs (>= 20), nftables, iproute2, iputils-arping, procps
Section: net
Priority: optional
Homepage: https://example.invalid/egress-natd
Description: deterministic, highly available egress IPs for bare-metal Linux fleets
 A daemon on every host elects, with authenticated VRRP-style heartbeats, which host
 owns each floating egress IP; the owner adds it, announces it with gratuitous ARP and
 SNATs selected traffic to it; every host steers its selected traffic there with policy
 routing and nftables, from one declarative file in /etc/egress-natd.
CONTROL
out="build/egress-natd_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
