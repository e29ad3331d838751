#!/usr/bin/env bash
# Builds a real `consul` binary from the Go module proxy and caches it outside
# the clone. Prints the binary's path on stdout; progress goes to stderr.
#
# Consul's go.mod has `replace` directives pointing at its own submodule
# folders (./api, ./sdk, ...) that a module download does not contain, so
# `go install github.com/hashicorp/consul@vX` refuses. We download the module,
# copy it somewhere writable, drop only the replaces that point at local
# folders (so the tagged submodule versions it requires are used) and build
# with -mod=mod.
#
#   CONSUL_VERSION   release to build (default below; others are tried if it fails)
#   SHARDCTL_CACHE   cache folder (default ~/.cache/shardctl)
set -euo pipefail

cache="${SHARDCTL_CACHE:-$HOME/.cache/shardctl}"
versions="${CONSUL_VERSION:-v1.20.6 v1.20.5 v1.19.2}"
export PATH="/usr/local/go/bin:$PATH"
export GOFLAGS=-mod=mod

for v in $versions; do
  bin="$cache/consul-$v/consul"
  if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
  fi
done

log() { printf 'consul.sh: %s\n' "$*" >&2; }
command -v go >/dev/null || { log "go not found (expected at /usr/local/go/bin)"; exit 1; }

# One build at a time: parallel test workers or CI jobs that all find no
# binary wait for the first build instead of starting their own.
mkdir -p "$cache"
exec 9>"$cache/.consul-build.lock"
if command -v flock >/dev/null; then
  flock 9
  for v in $versions; do # built by whoever held the lock before us?
    bin="$cache/consul-$v/consul"
    if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
      echo "$bin"
      exit 0
    fi
  done
fi

for v in $versions; do
  bin="$cache/consul-$v/consul"
  mkdir -p "$(dirname "$bin")"
  log "downloading github.com/hashicorp/consul@$v"
  info=$(go mod download -json "github.com/hashicorp/consul@$v" 2>&1 || true)
  dir=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    log "module $v not available: $(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",*$/\1/p' | head -1)"
    continue
  fi
  work="$cache/src-consul-$v"
  rm -rf "$work"; mkdir -p "$work"
  cp -r "$dir/." "$work/"; chmod -R u+w "$work"
  # Drop replace lines whose target is a local folder (./x or ../x), in both
  # single-line and block form; keep replaces to other modules.
  awk '
    /^replace[[:space:]]*\($/ { inblock=1; print; next }
    inblock && /^\)/ { inblock=0; print; next }
    inblock && /=>[[:space:]]*\.\.?\// { next }
    /^replace[[:space:]].*=>[[:space:]]*\.\.?\// { next }
    { print }
  ' "$work/go.mod" > "$work/go.mod.new" && mv "$work/go.mod.new" "$work/go.mod"
  log "building consul $v (several minutes on 2 cores)"
  if (cd "$work" && go build -mod=mod -trimpath -ldflags "-s -w" -o "$bin.tmp" . ) >&2; then
    mv "$bin.tmp" "$bin"
    rm -rf "$work"
    "$bin" version >&2
    echo "$bin"
    exit 0
  fi
  log "consul $v did not build; trying the next release"
done
log "no consul release built; see the errors above"
exit 1
