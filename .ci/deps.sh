#!/usr/bin/env bash
# Installs what sesame's demo and tests need on Debian: the kernel's firewall tools, iproute2,
# the real knockd/knock and fwknop/fwknopd that the tests use as peers, and nmap for the sweep
# tests. Idempotent; as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# gcc and libc6-dev: only for the race-detector run of the unit tests (the binary stays CGO_ENABLED=0).
# nmap: the scanner the sweep and invisibility tests run against the daemon.
# prometheus: for promtool, which the metrics tests run (check metrics, check rules, test rules).
# man-db and groff-base: man --warnings and lexgrog check the man pages; bash-completion and zsh:
# the completion tests; the package test (dist/) also needs dpkg, adduser and systemd's
# systemd-sysusers and systemd-tmpfiles, which Debian has.
# fail2ban: fail2ban-regex and fail2ban-client -t check dist/fail2ban against the daemon's log.
# openssh-server and openssh-client: the ssh-proxy test runs the real ssh through its own sshd.
# redis-server: the fleet tests and `go run ./bench fleet` start their own on a unix socket.
# iputils-ping: the real ping, for the SPA-in-a-ping tests (what a pinged host answers).
pkgs=(iproute2 nftables iptables knockd fwknop-client fwknop-server tcpdump procps nmap gcc libc6-dev prometheus strace
  man-db groff-base bash-completion zsh fail2ban openssh-server openssh-client iputils-ping redis-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages enable their daemons; the tests start their own copies in namespaces.
for svc in knockd fwknop-server prometheus fail2ban ssh redis-server; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
# A fail2ban server that an init other than systemd started would ban addresses on this
# machine (Debian enables its sshd jail): stop it too.
if command -v fail2ban-client >/dev/null && fail2ban-client ping >/dev/null 2>&1; then
  fail2ban-client stop >/dev/null 2>&1 || true
fi
if ! command -v go >/dev/null; then
  export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null || { echo "Go 1.26 or newer is required (https://go.dev/doc/install)" >&2; exit 1; }
go version
