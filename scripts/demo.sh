#!/usr/bin/env bash
# The main job on one machine, with the embedded store (no Consul needed).
# Run from the repository after `npm ci`:
#
#   1. resharding by access frequency on a layout without agents: a hot key
#      gets a shard of its own, cold shards merge;
#   2. a local cluster of three agents in zones a, b and c, a workload whose
#      hot spot moves from zone a to zone b, and shardctl acting on it:
#      resharding (the hot segment split onto a shard of its own, cold shards
#      merged: the data moves between the agents' shards, live), the forecast
#      per zone, the placement plan, and a live migration of the hot shard to
#      the node in zone b ahead of its traffic (data copied while it keeps
#      serving, then a two-phase cutover); then the migration history and a
#      dashboard frame.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${SHARDCTL_DEMO_DIR:-$(mktemp -d -t shardctl-demo-XXXXXX)}"
bin=(node dist/bin/shardctl.js)
[ -f dist/bin/shardctl.js ] || npm run build >&2
sc() {
  printf '\n$ shardctl %s\n' "$*" >&2
  "${bin[@]}" "$@"
}
echo "demo data in $root" >&2

echo "== 1. resharding by access frequency (embedded store, no agents)" >&2
export SHARDCTL_DATA_DIR="$root/embedded"
sc init
for i in $(seq 1 20); do "${bin[@]}" record "user:$i" --zone a >/dev/null; done
sc record cart:hot --op write --zone b --count 90000
sc reshard
sc reshard --apply
sc locate cart:hot

echo "== 2. a local cluster with a moving hot spot" >&2
export SHARDCTL_DATA_DIR="$root/cluster"
# thresholds for a demo-sized workload (the defaults are for production traffic)
export SHARDCTL_CONFIG="$root/cluster.yaml"
printf 'reshard:\n  splitRate: 0.05\n  mergeRate: 0.001\n  minDwellSeconds: 0\n' >"$SHARDCTL_CONFIG"
cleanup() { "${bin[@]}" down >/dev/null 2>&1 || true; }
trap cleanup EXIT
sc up --local --nodes 3 --zones a,b,c --base-port "${SHARDCTL_DEMO_PORT:-17400}"
echo "# the workload: 30 cold keys from zone a, then cart:hot written from zone a, then from zone b" >&2
for i in $(seq 1 30); do echo "v$i" | "${bin[@]}" put "user:$i" --zone a >/dev/null 2>&1; done
for i in $(seq 1 30); do "${bin[@]}" put cart:hot "a$i" --zone a >/dev/null 2>&1; done
for i in $(seq 1 60); do "${bin[@]}" put cart:hot "b$i" --zone b >/dev/null 2>&1; done
sc get cart:hot
sc shards
sc reshard --apply
sc shards
sc predict --key cart:hot --horizon 5
# one machine has no distance between zones: the plan is given the round trips of three
# zones 50 ms apart (on real hosts the agents measure them: see `shardctl rtt`)
printf '{"zones":["a","b","c"],"rtt_ms":[[1,50,50],[50,1,50],[50,50,1]]}\n' >"$root/zones.json"
sc plan --all --latency "$root/zones.json" --out "$root/plan.json"
sc migrate "$root/plan.json"
sc migrate --apply "$root/plan.json"
sc locate cart:hot
sc get cart:hot
sc migrations
sc dashboard --once --width 120 --height 40
sc down
trap - EXIT
