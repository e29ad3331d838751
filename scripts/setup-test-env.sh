#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: the Debian
# packages the integration tests start (sshd, redis for the agent benchmark,
# tmux for the dashboard test, prlimit and chattr for the disk fault tests),
# and a real Consul built from the Go module proxy (cached in
# ~/.cache/shardctl). Idempotent: skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in sshd:openssh-server redis-server:redis-server tmux:tmux ip:iproute2 prlimit:util-linux chattr:e2fsprogs; do
  cmd=${pair%%:*}
  pkg=${pair#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then need+=("$pkg"); fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi

consul_bin=$(bash scripts/consul.sh)
echo "setup: consul at $consul_bin" >&2
"$consul_bin" version | sed -n 1p >&2
