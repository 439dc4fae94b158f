#!/bin/bash
# Provisions a VM of the Vagrant lab from the repository in /egress-natd.
#   provision.sh router r  ROUTER_IP CONTAINER_HOST_IP   the echo server and the way out
#   provision.sh host   hN ROUTER_IP CONTAINER_HOST_IP   egress-natd, with vagrant/config.yaml
# The lab's addresses (echo servers, containers, routes) come back at boot with enat-lab.service.
set -euo pipefail
role=$1 name=$2 router=$3 containers_host=$4
repo=/egress-natd
IF=eth1

ip -o -4 addr show dev "$IF" | grep -q "192.168.56." || {
  echo "provision: the lab network is not on $IF (see 'ip -br addr'); vagrant/config.yaml says interface: $IF" >&2
  exit 1
}

# Node.js 20 (Debian 12 has 18): NodeSource's repository, as on the machines egress-natd is built on.
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates curl gnupg make >/dev/null
  curl -fsSL https://deb.nodesource.com/setup_20.x | bash - >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
fi
make -C "$repo" deps build >/dev/null

# Lab plumbing: one script, run now and at every boot.
cat >/usr/local/sbin/enat-lab <<SCRIPT
#!/bin/sh
# The Vagrant lab's addresses and routes (vagrant/provision.sh).
set -e
sysctl -qw net.ipv4.ip_forward=1
if [ "$role" = router ]; then
  for a in 203.0.113.10 203.0.113.11 198.51.100.10; do ip addr replace \$a/32 dev lo; done
  ip route replace 10.10.1.0/24 via $containers_host dev $IF
  ip route replace 10.10.2.0/24 via $containers_host dev $IF
else
  ip route replace 203.0.113.0/24 via $router dev $IF
  ip route replace 198.51.100.0/24 via $router dev $IF
  if [ "$name" = h3 ]; then
    n=1
    for c in c1 c2; do
      ip netns add \$c 2>/dev/null || true
      ip link show \$c-h >/dev/null 2>&1 || ip link add \$c-h type veth peer name eth0 netns \$c
      ip addr replace 10.10.\$n.1/24 dev \$c-h && ip link set \$c-h up
      ip -n \$c addr replace 10.10.\$n.2/24 dev eth0 && ip -n \$c link set eth0 up && ip -n \$c link set lo up
      ip -n \$c route replace default via 10.10.\$n.1
      n=\$((n + 1))
    done
  else
    ip route replace 10.10.1.0/24 via $containers_host dev $IF
    ip route replace 10.10.2.0/24 via $containers_host dev $IF
  fi
fi
SCRIPT
chmod 0755 /usr/local/sbin/enat-lab
cat >/etc/systemd/system/enat-lab.service <<UNIT
[Unit]
Description=egress-natd Vagrant lab: addresses, routes, containers
After=network-online.target
Wants=network-online.target
Before=egress-natd.service enat-echo.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/enat-lab
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now enat-lab.service

if [ "$role" = router ]; then
  cat >/etc/systemd/system/enat-echo.service <<UNIT
[Unit]
Description=egress-natd Vagrant lab: echo server (answers with the source IP it sees)
After=enat-lab.service
[Service]
ExecStart=/usr/bin/node $repo/dist/lab/echo-server.js 7
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now enat-echo.service
  exit 0
fi

# A host: the same key and config as every other host, then the service.
install -d -m 0755 /etc/egress-natd
install -m 0600 "$repo/vagrant/.cluster.key" /etc/egress-natd/cluster.key
install -m 0644 "$repo/vagrant/config.yaml" /etc/egress-natd/config.yaml
make -C "$repo" install PREFIX=/usr >/dev/null
systemctl daemon-reload
systemctl enable egress-natd.service
systemctl restart egress-natd.service
egress-natd check
echo "provision: $name runs egress-natd; try: sudo egress-natd status"
