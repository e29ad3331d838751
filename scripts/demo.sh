#!/usr/bin/env bash
# The main job on one machine, with the embedded store (no Consul needed):
# a workload with a hot key, then shardctl reshards the key space by access
# frequency. Run from the repository after `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."
export SHARDCTL_DATA_DIR="${SHARDCTL_DATA_DIR:-$(mktemp -d -t shardctl-demo-XXXXXX)}"
sc() {
  echo "\$ shardctl $*" >&2
  node dist/bin/shardctl.js "$@"
}
echo "demo data directory: $SHARDCTL_DATA_DIR" >&2

sc init
echo "# a workload: 1,000 cold keys read now and then, and one hot key written from zone b" >&2
for i in $(seq 1 40); do sc record "user:$i" --zone a >/dev/null; done
sc record "cart:hot" --op write --zone b --count 90000
sc reshard
sc reshard --apply
sc locate cart:hot
sc shards
