/**
 * Deploying node agents over SSH (docs/DEPLOY.md tells the whole story).
 *
 * Each node goes through a list of tasks with `execute` and `rollback`:
 * connect → probe the platform → stage (upload the bundle, verify its
 * SHA-256 on the node, write the config and scripts) → [stop the old agent]
 * → swap the staged files into place → install the service → start → wait
 * for /health. A failure rolls back that node's tasks in reverse: a fresh
 * node is left with no agent running and none of our files but its data
 * directory; an upgraded node gets its previous version back, running.
 * Nodes run in parallel (bounded); the part of an upgrade from "stop" to
 * "healthy" holds a lock, so a changed bundle rolls through the cluster one
 * node at a time. Then the healthy nodes are registered in the location map
 * (compare-and-set) — and, with Consul, as services.
 *
 * Every remote command is an argv; values reach the remote shell only
 * through `shellQuote` (ssh.ts) or as positional parameters ("$1") of a
 * constant script. The token goes over stdin into a 0600 file: it is never
 * in a command line, a log line or a report.
 */
import { createHash } from "node:crypto";
import { AgentRpc } from "./agent-rpc.js";
import { AGENT_NODE_FLAGS } from "../agent/node-flags.js";
import type { Bundle } from "./bundle.js";
import type { InventoryNode } from "./inventory.js";
import { HostKeyError, preferredHostKeyAlgorithms, verifyHostKey } from "./known-hosts.js";
import { shellQuote, SshExecutor, type ExecResult, type Executor } from "./ssh.js";
import { initialLayout, type LocationMap, type NodeInfo } from "../engine/location-map.js";
import type { LocationStore } from "../engine/ports.js";
import { PreconditionError, UsageError, UserError } from "../errors.js";
import { printable } from "../output.js";
import { failpoint } from "../failpoint.js";
import { updateMap } from "./map-update.js";

// ---------------------------------------------------------------- tasks

export interface Task<C> {
  /** What the progress display shows while it runs. */
  readonly name: string;
  execute(ctx: C): Promise<void>;
  rollback?(ctx: C): Promise<void>;
}

export class TaskError extends Error {
  constructor(
    readonly step: string,
    readonly original: unknown,
    readonly rollbackErrors: string[],
  ) {
    super(original instanceof Error ? original.message : String(original), { cause: original });
    this.name = "TaskError";
  }
}

/** The step reported for a node that a SIGINT/SIGTERM of deploy stopped before its cut-over. */
export const INTERRUPTED_STEP = "interrupted";

/** Thrown by a gate of runTasks to stop before the next task (the ones that ran roll back). */
export class InterruptedError extends UserError {
  constructor(
    readonly signalName: string,
    message: string,
  ) {
    super(`deploy was interrupted (${signalName}) ${message}`, {
      hint: "run the same deploy again: it carries on with the nodes that are not up to date yet",
    });
    this.name = "InterruptedError";
  }
}

/**
 * Runs tasks in order. When one fails, the ones that ran — the failing one
 * included, as it may have done part of its work — roll back in reverse, and
 * the failure is rethrown as a TaskError naming the step. A rollback that
 * fails is recorded beside the original error, never instead of it. `gate`,
 * called before each task, may throw to stop there (an interrupted deploy):
 * the tasks that ran roll back the same way.
 */
export async function runTasks<C>(
  tasks: readonly Task<C>[],
  ctx: C,
  onStep: (name: string) => void = () => {},
  gate?: (task: Task<C>) => void,
): Promise<void> {
  const ran: Task<C>[] = [];
  for (const task of tasks) {
    try {
      gate?.(task);
      onStep(task.name);
      ran.push(task);
      await task.execute(ctx);
    } catch (err) {
      const rollbackErrors: string[] = err instanceof TaskError ? [...err.rollbackErrors] : [];
      for (const done of ran.reverse()) {
        if (!done.rollback) continue;
        onStep(`roll back: ${done.name}`);
        try {
          await done.rollback(ctx);
        } catch (rbErr) {
          rollbackErrors.push(`${done.name}: ${rbErr instanceof Error ? rbErr.message : String(rbErr)}`);
        }
      }
      if (err instanceof TaskError) throw new TaskError(err.step, err.original, rollbackErrors);
      throw new TaskError(
        err instanceof InterruptedError ? INTERRUPTED_STEP : task.name,
        err,
        rollbackErrors,
      );
    }
  }
}

/** The step reported for a node whose upgrade was not attempted because an earlier cut-over failed. */
export const ROLLING_HALTED_STEP = "rolling upgrade halted";

/**
 * The cut-over of running agents, one node at a time. The first cut-over that
 * fails (its node rolled back to its previous agent) halts the rollout: the
 * nodes still waiting for the slot are not stopped at all — a release that
 * does not come up on one node is not tried on the next, taking each down in
 * turn (or, when a rollback fails too, several at once).
 */
export class RollingUpgrade {
  private readonly lock = new Mutex();
  /** The node whose cut-over failed first, and why. */
  halted?: { nodeId: string; step: string; reason: string };
  /** Nodes whose cut-over succeeded, in order, with the bundle each ran before. */
  readonly upgraded: { nodeId: string; previousBundle?: string }[] = [];

  constructor(private readonly control?: DeployControl) {}

  /** For the node that halted the rollout: what was and was not changed, and how to go back. */
  haltHint(): string {
    const h = this.halted;
    if (!h) return "";
    const done = this.upgraded.map((u) => u.nodeId);
    const previous = [...new Set(this.upgraded.map((u) => u.previousBundle).filter(Boolean))];
    return (
      `the rolling upgrade stopped at ${h.nodeId}: the nodes still waiting for their turn were not stopped` +
      (done.length
        ? `; ${done.join(", ")} already run the new bundle — to roll them back to the release each ran before, which is kept on it: \`shardctl deploy --rollback --nodes ${done.join(",")}\`${previous.length ? ` (its sha256 was ${previous.join(" or ")})` : ""}`
        : "; no node was upgraded")
    );
  }

  /** fn while no cut-over runs (a repair restarts agents too: one node at a time, like an upgrade). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.run(fn);
  }

  group<C>(
    nodeId: string,
    previousBundle: string | undefined,
    inner: readonly Task<C>[],
    onStep: (name: string) => void,
  ): Task<C> {
    return {
      name: "wait for the rolling slot",
      execute: (ctx) =>
        this.lock.run(async () => {
          // interrupted while waiting for the slot: this node's agent is not stopped at all
          const signalName = this.control?.interrupted;
          if (signalName)
            throw new InterruptedError(
              signalName,
              "while this node waited for its turn: not upgraded; its agent was not stopped and still runs the version it had",
            );
          if (this.halted) {
            const h = this.halted;
            throw new TaskError(
              ROLLING_HALTED_STEP,
              new UserError(
                `not upgraded: the rolling upgrade stopped when the new agent of ${h.nodeId} failed at "${h.step}" (${h.reason.split("\n")[0]}); this node was not stopped and still runs the version it had`,
                {
                  hint: `fix what made ${h.nodeId} fail, then run the same deploy again: it upgrades the nodes that are not up to date yet, one at a time`,
                },
              ),
              [],
            );
          }
          this.control?.cutoverStarted(nodeId);
          try {
            await runTasks(inner, ctx, onStep);
            this.upgraded.push({ nodeId, previousBundle });
          } catch (err) {
            const te = err instanceof TaskError ? err : new TaskError("cut-over", err, []);
            this.halted = { nodeId, step: te.step, reason: te.message };
            throw err;
          }
        }),
    };
  }
}

/**
 * Interrupting a deploy (SIGINT/SIGTERM, through `interrupt`): a node that has
 * not begun its cut-over stops at its next step (what it staged is removed, its
 * agent is not touched); a node whose cut-over has begun — its old agent being
 * stopped, or an interrupted cut-over being repaired — carries on to the end,
 * its new agent up or its previous one back, because stopping there would leave
 * it with no agent. `inCutover` names those nodes, for the message.
 */
export class DeployControl {
  private reason?: string;
  private readonly cutovers = new Set<string>();

  /** The signal's name once interrupted. */
  get interrupted(): string | undefined {
    return this.reason;
  }

  interrupt(signalName: string): void {
    this.reason ??= signalName;
  }

  cutoverStarted(nodeId: string): void {
    this.cutovers.add(nodeId);
  }

  cutoverEnded(nodeId: string): void {
    this.cutovers.delete(nodeId);
  }

  /** Nodes whose cut-over has begun and not ended: their agent may be down right now. */
  get inCutover(): string[] {
    return [...this.cutovers];
  }
}

/** fn over items with at most `limit` in flight; results in input order, never rejects. */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = { status: "fulfilled", value: await fn(items[i], i) };
      } catch (reason) {
        results[i] = { status: "rejected", reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}

/** One at a time, in arrival order. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

// ---------------------------------------------------------------- the remote side

/**
 * Where the releases a node ran before are kept: `releases/<sha256>.mjs`,
 * newest (most recently replaced) first by mtime — what `deploy --rollback`
 * installs, and what a failed cut-over does not need (it has .prev).
 */
export const RELEASES_DIR = "releases";

/** By default a node keeps the 2 releases it ran before the current one. */
export const DEFAULT_KEEP_RELEASES = 2;
export const MAX_KEEP_RELEASES = 100;

/**
 * Written into the dataDir just before a running agent is stopped for a
 * cut-over ("<sha256 of the release it ran> <sha256 of the new one>"), removed
 * once the node runs an agent again (the new one, or the previous one after a
 * rollback). A deploy that finds it knows that the cut-over was interrupted
 * and that the node's agent ran before it: it repairs the node first.
 */
export const CUTOVER_MARKER = ".cutover";

/** The files deploy owns in a node's dataDir (the agent's shards live in data/, which is never swapped). */
export const AGENT_FILES = [
  "agent.mjs",
  "agent.sh",
  "supervise.sh",
  "ctl.sh",
  "agent.json",
  "token",
  "consul-token",
  "installed",
] as const;

export function unitName(nodeId: string): string {
  return `shardctl-agent-${nodeId}.service`;
}

export function unitPath(nodeId: string): string {
  return `/etc/systemd/system/${unitName(nodeId)}`;
}

export interface AgentSettings {
  nodeId: string;
  zone: string;
  listen: string;
  advertise: string;
  zones: readonly string[];
  segments: number;
  dataDir: string;
  /** Absolute path of node on the host (systemd does not search the login PATH). */
  nodePath: string;
  mode: "systemd" | "process";
  /** The Consul store, when the agent reads the map from it (tokenFile: a consul-token file is installed). */
  consul?: { addr: string; prefix: string; tokenFile: boolean };
}

/** The launcher: runs the agent in the foreground (systemd's ExecStart, or under supervise.sh). */
export function agentScript(s: AgentSettings): string {
  const dir = s.dataDir;
  const argv = [
    s.nodePath,
    ...AGENT_NODE_FLAGS,
    `${dir}/agent.mjs`,
    "--data-dir",
    `${dir}/data`,
    "agent",
    "--listen",
    s.listen,
    "--zone",
    s.zone,
    "--node-id",
    s.nodeId,
    "--token-file",
    `${dir}/token`,
    "--segments",
    String(s.segments),
  ];
  return [
    "#!/bin/sh",
    `# shardctl agent of node ${s.nodeId}: written by \`shardctl deploy\`, replaced on every deploy`,
    `cd ${shellQuote(dir)} || exit 1`,
    `SHARDCTL_ZONES=${shellQuote(s.zones.join(","))}`,
    `SHARDCTL_SEGMENTS=${shellQuote(String(s.segments))}`,
    "export SHARDCTL_ZONES SHARDCTL_SEGMENTS",
    // nothing from the login's environment: the store is what this script says
    "unset SHARDCTL_TOKEN SHARDCTL_CONFIG SHARDCTL_STORE CONSUL_HTTP_ADDR CONSUL_HTTP_TOKEN CONSUL_HTTP_TOKEN_FILE SHARDCTL_CONSUL_PREFIX",
    ...(s.consul
      ? [
          // the map, for shards a crash left in the middle of a migration (read only then)
          "SHARDCTL_STORE=consul",
          `CONSUL_HTTP_ADDR=${shellQuote(s.consul.addr)}`,
          `SHARDCTL_CONSUL_PREFIX=${shellQuote(s.consul.prefix)}`,
          "export SHARDCTL_STORE CONSUL_HTTP_ADDR SHARDCTL_CONSUL_PREFIX",
          ...(s.consul.tokenFile
            ? [`CONSUL_HTTP_TOKEN_FILE=${shellQuote(`${dir}/consul-token`)}`, "export CONSUL_HTTP_TOKEN_FILE"]
            : []),
        ]
      : []),
    `exec ${argv.map(shellQuote).join(" ")}`,
    "",
  ].join("\n");
}

/**
 * Where there is no systemd: keeps the agent running. It restarts the agent
 * after a crash (giving up after 5 crashes within 10 s of their start), and
 * on SIGTERM forwards it to the agent and waits for its clean exit. On its way
 * out it removes agent.pid only while the file still names it: a supervisor
 * started after it must not lose its own.
 */
export function superviseScript(s: AgentSettings): string {
  const dir = shellQuote(s.dataDir);
  return `#!/bin/sh
# keeps the shardctl agent of node ${s.nodeId} running: written by \`shardctl deploy\`
DIR=${dir}
child=
forget() { [ "$(cat "$DIR/agent.pid" 2>/dev/null)" = "$$" ] && rm -f "$DIR/agent.pid"; }
stopping() {
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
  forget
  exit 0
}
trap stopping TERM INT
quick=0
while :; do
  started=$(date +%s)
  sh "$DIR/agent.sh" &
  child=$!
  wait "$child"
  rc=$?
  child=
  if [ "$rc" -eq 0 ]; then forget; exit 0; fi
  if [ $(( $(date +%s) - started )) -lt 10 ]; then quick=$((quick + 1)); else quick=0; fi
  if [ "$quick" -ge 5 ]; then
    echo "supervise: the agent exited with $rc 5 times within 10 s of starting; giving up"
    forget
    exit 1
  fi
  echo "supervise: the agent exited with $rc; restarting in 2 s"
  sleep 2
done
`;
}

/**
 * start | stop [SECONDS] | status | logs [LINES], for both systemd and the supervised process.
 *
 * In process mode, `stop` notes the supervisor it is stopping in agent.stopping
 * until it is gone. A stop can end half way — its SSH connection dropped and
 * the node killed it, or it timed out — with the agent still draining: the
 * supervisor still runs, but is on its way out. `status` does not call that
 * running, and `start` waits for it to be gone (SIGKILL after 30 s) and then
 * starts a new one, instead of answering "already running" for an agent that
 * is about to exit.
 */
export function ctlScript(s: AgentSettings): string {
  return `#!/bin/sh
# controls the shardctl agent of node ${s.nodeId}: written by \`shardctl deploy\`
DIR=${shellQuote(s.dataDir)}
MODE=${shellQuote(s.mode)}
UNIT=${shellQuote(unitName(s.nodeId))}
PIDFILE="$DIR/agent.pid"
STOPPING="$DIR/agent.stopping"
stopping() { [ "$(cat "$STOPPING" 2>/dev/null)" = "$1" ]; }
# removes the pid file and the stopping note only while they name "$1": a stop that ended late
# must not erase what a later start wrote
forget() { for f in "$PIDFILE" "$STOPPING"; do [ "$(cat "$f" 2>/dev/null)" = "$1" ] && rm -f "$f"; done; }
# a zombie (ended, not reaped yet: init may reap orphans late) answers kill -0 but does not run
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ "$s" != Z ] && [ "$s" != X ]
}
running_pid() {
  [ -f "$PIDFILE" ] || return 1
  p=$(cat "$PIDFILE" 2>/dev/null)
  case "$p" in ''|*[!0-9]*) return 1 ;; esac
  alive "$p" || return 1
  # a recycled pid is not our supervisor
  if [ -r "/proc/$p/cmdline" ]; then
    tr '\\000' '\\n' < "/proc/$p/cmdline" | grep -qxF "$DIR/supervise.sh" || return 1
  fi
  echo "$p"
}
case "$1" in
  start)
    if [ "$MODE" = systemd ]; then systemctl start "$UNIT"; exit $?; fi
    if p=$(running_pid); then
      if ! stopping "$p"; then echo "already running (pid $p)"; exit 0; fi
      # a stop that did not finish: this supervisor is on its way out
      i=0
      while alive "$p" && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
      if alive "$p"; then kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p"; fi
      echo "waited for the agent an unfinished stop left draining (pid $p)"
    fi
    rm -f "$STOPPING"
    cd "$DIR" || exit 1
    setsid nohup sh "$DIR/supervise.sh" >> "$DIR/agent.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    echo "started (pid $!)"
    ;;
  stop)
    if [ "$MODE" = systemd ]; then systemctl stop "$UNIT"; exit $?; fi
    if ! p=$(running_pid); then rm -f "$PIDFILE" "$STOPPING"; echo "not running"; exit 0; fi
    echo "$p" > "$STOPPING"
    kill -TERM "$p"
    limit=$(( \${2:-30} * 10 ))
    i=0
    while alive "$p" && [ "$i" -lt "$limit" ]; do sleep 0.1; i=$((i + 1)); done
    if alive "$p"; then
      kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p"
      echo "killed (did not stop within \${2:-30} s)"
    else
      echo "stopped"
    fi
    forget "$p"
    ;;
  status)
    if [ "$MODE" = systemd ]; then
      if systemctl is-active --quiet "$UNIT"; then echo running; exit 0; fi
      echo stopped; exit 3
    fi
    if p=$(running_pid); then
      if stopping "$p"; then echo "stopping (pid $p)"; exit 3; fi
      echo "running (pid $p)"; exit 0
    fi
    echo stopped; exit 3
    ;;
  logs)
    if [ "$MODE" = systemd ]; then exec journalctl -u "$UNIT" -n "\${2:-100}" --no-pager; fi
    exec tail -n "\${2:-100}" "$DIR/agent.log"
    ;;
  *)
    echo "usage: ctl.sh start | stop [SECONDS] | status | logs [LINES]" >&2
    exit 2
    ;;
esac
`;
}

/** A value in a systemd unit: double-quoted, with systemd's specifiers (%) and variables ($) escaped. */
export function systemdQuote(value: string): string {
  if (hasControlChar(value)) throw new Error("a systemd unit value cannot contain control characters");
  return `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/%/g, "%%").replace(/\$/g, "$$$$")}"`;
}

export function unitFile(s: AgentSettings): string {
  return `# written by \`shardctl deploy\` for node ${s.nodeId}
[Unit]
Description=shardctl agent (node ${s.nodeId})
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/bin/sh ${systemdQuote(`${s.dataDir}/agent.sh`)}
Restart=on-failure
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
`;
}

/** What the probe found on a node. Pure parsing of the probe's key=value lines. */
export interface PlatformFacts {
  nodePath?: string;
  nodeVersion?: string;
  /** Free bytes on the filesystem that holds dataDir (or its nearest existing parent). */
  freeBytes?: number;
  systemd: boolean;
  uid?: number;
  hasSha256sum: boolean;
  /** coreutils' timeout(1), which every remote command runs under (ssh.ts: REMOTE_RUN_SCRIPT). */
  hasTimeout: boolean;
  /** The node id in the dataDir's agent.json: the node whose agent is installed there. */
  installedNode?: string;
  /** Shards the agent's data directory holds data of (owned, fenced or prepared: not released copies). */
  heldShards: number;
  /** The `installed` marker: install fingerprint and bundle checksum. */
  installedFingerprint?: string;
  installedBundle?: string;
  /** sha256 of the agent.mjs in place. */
  bundleOnDisk?: string;
  running: boolean;
  /** Releases kept in releases/, most recently replaced first. */
  releases: { sha256: string; bytes: number }[];
  /** The CUTOVER_MARKER of an interrupted cut-over. */
  cutover?: { from: string; to: string };
  /** .prev exists (the files an unfinished cut-over replaced); .prev/unit: the systemd unit it replaced. */
  prev: boolean;
  prevUnit: boolean;
}

/** A shell command printing the node id an install's agent.json names (`file`: a quoted shell word). */
function agentJsonNode(file: string): string {
  return `sed -n 's/^ *"nodeId": *"\\([^"]*\\)".*/\\1/p' ${file} | head -n 1`;
}

/** Prints facts about the node; its only input is "$1" (the dataDir). */
export const PROBE_SCRIPT = `dir=$1
node=$(command -v node 2>/dev/null) || node=
echo "node=$node"
if [ -n "$node" ]; then echo "nodeVersion=$("$node" --version 2>/dev/null)"; fi
d=$dir
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "df=$(df -Pk "$d" 2>/dev/null | tail -n 1)"
if [ -d /run/systemd/system ]; then echo systemd=1; else echo systemd=0; fi
echo "uid=$(id -u)"
if command -v sha256sum >/dev/null 2>&1; then echo sha256sum=1; else echo sha256sum=0; fi
if command -v timeout >/dev/null 2>&1; then echo timeout=1; else echo timeout=0; fi
if [ -f "$dir/installed" ]; then echo "installed=$(head -n 1 "$dir/installed")"; fi
if [ -f "$dir/agent.json" ]; then echo "agentNode=$(${agentJsonNode('"$dir/agent.json"')})"; fi
if [ -f "$dir/agent.mjs" ] && command -v sha256sum >/dev/null 2>&1; then echo "bundle=$(sha256sum < "$dir/agent.mjs" | cut -d' ' -f1)"; fi
if [ -f "$dir/ctl.sh" ] && sh "$dir/ctl.sh" status >/dev/null 2>&1; then echo running=1; else echo running=0; fi
if [ -d "$dir/releases" ]; then
  ls -t "$dir/releases" | while IFS= read -r f; do
    case "$f" in *.mjs) echo "release=\${f%.mjs} $(wc -c < "$dir/releases/$f")" ;; esac
  done
fi
if [ -f "$dir/.cutover" ]; then echo "cutover=$(head -n 1 "$dir/.cutover")"; fi
if [ -d "$dir/data/shards" ]; then echo "heldShards=$(grep -lE 'state.{5}(owned|fenced|prepared)' "$dir"/data/shards/*/meta.json 2>/dev/null | wc -l)"; fi
if [ -d "$dir/.prev" ]; then echo prev=1; fi
if [ -f "$dir/.prev/unit" ]; then echo prevUnit=1; fi
`;

const SHA256_HEX = /^[0-9a-f]{64}$/;

export function parseProbe(stdout: string): PlatformFacts {
  const kv = new Map<string, string>();
  const releases: { sha256: string; bytes: number }[] = [];
  for (const line of stdout.split("\n")) {
    const i = line.indexOf("=");
    if (i <= 0) continue;
    const [key, value] = [line.slice(0, i), line.slice(i + 1).trim()];
    if (key === "release") {
      // only names deploy gave: anything else in releases/ is not a release
      const [sha256, bytes] = value.split(/\s+/);
      if (SHA256_HEX.test(sha256) && Number.isSafeInteger(Number(bytes)))
        releases.push({ sha256, bytes: Number(bytes) });
    } else kv.set(key, value);
  }
  const [cutFrom, cutTo] = (kv.get("cutover") ?? "").split(/\s+/);
  const df = (kv.get("df") ?? "").split(/\s+/);
  const availKiB = Number(df[3]);
  const [fingerprint, bundle] = (kv.get("installed") ?? "").split(/\s+/);
  const uid = Number(kv.get("uid"));
  return {
    nodePath: kv.get("node") || undefined,
    nodeVersion: kv.get("nodeVersion") || undefined,
    freeBytes: df.length >= 4 && Number.isFinite(availKiB) ? availKiB * 1024 : undefined,
    systemd: kv.get("systemd") === "1",
    uid: Number.isInteger(uid) ? uid : undefined,
    hasSha256sum: kv.get("sha256sum") === "1",
    hasTimeout: kv.get("timeout") === "1",
    installedNode: kv.get("agentNode") || undefined,
    heldShards: Number.isSafeInteger(Number(kv.get("heldShards"))) ? Number(kv.get("heldShards")) : 0,
    installedFingerprint: fingerprint || undefined,
    installedBundle: bundle || undefined,
    bundleOnDisk: kv.get("bundle") || undefined,
    running: kv.get("running") === "1",
    releases,
    cutover: kv.has("cutover") ? { from: cutFrom ?? "", to: cutTo ?? "" } : undefined,
    prev: kv.get("prev") === "1",
    prevUnit: kv.get("prevUnit") === "1",
  };
}

export function nodeMajor(version: string | undefined): number | undefined {
  const m = /^v?(\d+)\./.exec(version ?? "");
  return m ? Number(m[1]) : undefined;
}

/** Moves the staged files into place, keeping what they replace in .prev (marking files that did not exist). */
const SWAP_SCRIPT = `set -e
dir=$1
shift
rm -rf "$dir/.prev"
mkdir -m 700 "$dir/.prev"
for f in "$@"; do
  if [ -e "$dir/$f" ]; then mv -f "$dir/$f" "$dir/.prev/$f"; else : > "$dir/.prev/$f.absent"; fi
  mv -f "$dir/.staging/$f" "$dir/$f"
done
`;

/** Undoes SWAP_SCRIPT for the files it got to. */
const UNSWAP_SCRIPT = `dir=$1
shift
for f in "$@"; do
  if [ -e "$dir/.prev/$f" ]; then mv -f "$dir/.prev/$f" "$dir/$f"
  elif [ -e "$dir/.prev/$f.absent" ]; then rm -f "$dir/$f"
  fi
done
rm -rf "$dir/.prev"
`;

/**
 * After a cut-over: keeps the release it replaced (.prev/agent.mjs, sha256 "$4", or '' on a fresh
 * install) as releases/<sha256>.mjs, stamped now, drops the copy of the release now in place ("$3"),
 * keeps the "$2" most recently replaced releases and deletes the others, then clears the cut-over
 * marker and what the cut-over no longer needs.
 */
const COMMIT_SCRIPT = `dir=$1 keep=$2 cur=$3 prev=$4
mkdir -p "$dir/releases" && chmod 700 "$dir/releases" || exit 1
if [ -n "$prev" ] && [ "$prev" != "$cur" ] && [ -f "$dir/.prev/agent.mjs" ]; then
  mv -f "$dir/.prev/agent.mjs" "$dir/releases/$prev.mjs" && touch "$dir/releases/$prev.mjs" || exit 1
fi
rm -f "$dir/releases/$cur.mjs"
n=0
ls -t "$dir/releases" | while IFS= read -r f; do
  case "$f" in *.mjs) ;; *) continue ;; esac
  n=$((n + 1))
  if [ "$n" -gt "$keep" ]; then rm -f "$dir/releases/$f"; fi
done
rm -f "$dir/.cutover"
rm -rf "$dir/.prev" "$dir/.staging"
`;

/** Writes stdin to "$1" with mode "$2", atomically (a temp file, then rename). */
const WRITE_FILE_SCRIPT = `umask 077
cat > "$1.tmp-$$" && chmod "$2" "$1.tmp-$$" && mv -f "$1.tmp-$$" "$1"
`;

/**
 * Writes several files in one round trip: stdin is JSON {dir, files: [{name,
 * content, mode}]}; each is written to a temp file with its mode, then renamed.
 * (Node is on every node by then: the probe checked it.)
 */
const WRITE_FILES_JS = `const fs = require("node:fs");
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", () => {
  const { dir, files } = JSON.parse(input);
  for (const f of files) {
    if (f.name.includes("/") || f.name.startsWith(".")) throw new Error("bad file name " + f.name);
    const tmp = dir + "/." + f.name + ".tmp-" + process.pid;
    fs.writeFileSync(tmp, f.content, { mode: f.mode });
    fs.chmodSync(tmp, f.mode);
    fs.renameSync(tmp, dir + "/" + f.name);
  }
});`;

/** Asks the agent's /health from the node itself; prints what it saw; exits 0 when it is this node's agent. */
/**
 * One health probe, run on the node: the agent at the address must be this node's, and serve this
 * install's data directory (dataDirId, which agents from before it do not report): an old install
 * elsewhere still listening on the address is not the agent this deploy started.
 */
const HEALTH_JS = `const [url, id, dir] = process.argv.slice(1);
let want = dir + "/data";
try { want = require("fs").realpathSync(want); } catch {}
want = require("crypto").createHash("sha256").update(want).digest("hex").slice(0, 16);
fetch(url, { signal: AbortSignal.timeout(2000) }).then(async (r) => {
  const b = await r.json().catch(() => ({}));
  const other = typeof b.dataDirId === "string" && b.dataDirId !== want;
  process.stdout.write(JSON.stringify({ status: r.status, nodeId: b.nodeId, ...(other ? { dataDir: "another" } : {}) }));
  process.exit(r.status === 200 && b.nodeId === id && !other ? 0 : 1);
}, (e) => { process.stdout.write(String((e && e.cause && e.cause.code) || e)); process.exit(1); });`;

function lastLines(text: string, n = 6): string {
  return text.trim().split("\n").slice(-n).join("\n");
}

function remoteFailure(what: string, r: ExecResult): Error {
  const detail = lastLines(r.stderr || r.stdout);
  return new Error(`${what} failed (exit ${r.code})${detail ? `: ${detail}` : ""}`);
}

async function run(
  exec: Executor,
  what: string,
  argv: string[],
  opts?: { stdin?: string | Buffer; timeoutMs?: number },
): Promise<ExecResult> {
  const r = await exec.exec(argv, opts);
  if (r.code !== 0) throw remoteFailure(what, r);
  return r;
}

export async function writeRemoteFile(
  exec: Executor,
  path: string,
  content: string | Buffer,
  mode: number,
): Promise<void> {
  await run(exec, `writing ${path}`, ["sh", "-c", WRITE_FILE_SCRIPT, "sh", path, mode.toString(8)], {
    stdin: content,
  });
}

/** The URL the node uses to ask its own agent: the listen address, with a wildcard replaced by loopback. */
export function localHealthUrl(listen: string): string {
  const i = listen.lastIndexOf(":");
  let host = listen.slice(0, i).replace(/^\[(.*)\]$/, "$1");
  const port = listen.slice(i + 1);
  if (host === "0.0.0.0" || host === "") host = "127.0.0.1";
  if (host === "::") host = "::1";
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}/health`;
}

// ---------------------------------------------------------------- one node

export interface HostKeyOptions {
  knownHostsFile: string;
  acceptNew: boolean;
  /** The SSH agent's socket, for nodes without keyFile (default: SSH_AUTH_SOCK of this process). */
  agentSocket?: string;
}

export type ConnectNode = (
  node: InventoryNode,
  hostKeys: HostKeyOptions,
  onAccepted: (line: string) => void,
) => Promise<Executor>;

/** The real connection: ssh2 with the host key checked against the pin or known_hosts. */
export const connectNode: ConnectNode = (node, hostKeys, onAccepted) =>
  SshExecutor.connect({
    host: node.host,
    port: node.port,
    user: node.user,
    keyFile: node.keyFile,
    agentSocket: hostKeys.agentSocket,
    hostKeyAlgorithms: node.hostKey
      ? undefined
      : preferredHostKeyAlgorithms(hostKeys.knownHostsFile, node.host, node.port),
    verifyHostKey: async (blob) => {
      verifyHostKey(node.host, node.port, blob, {
        knownHostsFile: hostKeys.knownHostsFile,
        pinned: node.hostKey,
        acceptNew: hostKeys.acceptNew,
        onAccepted,
      });
      return true;
    },
  });

export type Outcome =
  "installed" | "upgraded" | "rolled-back" | "started" | "repaired" | "up-to-date" | "failed";

export interface NodeReport {
  id: string;
  host: string;
  address: string;
  zone: string;
  outcome: Outcome;
  mode?: "systemd" | "process";
  /** The step that failed. */
  step?: string;
  error?: string;
  hint?: string;
  /** Host key fingerprint, when the host key was the problem. */
  hostKeyFingerprint?: string;
  rollbackErrors?: string[];
  /** The release installed (or meant to be): the bundle's, or with --rollback the kept one chosen. */
  bundleSha256?: string;
  durationMs: number;
  /** For an upgrade of a running agent: from the stop to the new agent's first healthy answer. */
  downtimeMs?: number;
  /** What this run found of an interrupted cut-over on the node, and what it did about it. */
  repaired?: string;
}

export interface ProgressEvent {
  step: string;
  /** 0..100 during the upload. */
  percent?: number;
  /** Set once, when the node is finished. */
  final?: Outcome;
  detail?: string;
}

export interface DeployOptions {
  nodes: InventoryNode[];
  /** The release to install; none with `rollback`. */
  bundle?: Bundle;
  /** Install on each node the release it ran most recently before its current one, kept in releases/. */
  rollback?: boolean;
  /** How many releases a node ran before keeps in releases/ (default DEFAULT_KEEP_RELEASES). */
  keepReleases?: number;
  /** The agents' bearer token. Never logged, never in a command line. */
  token: string;
  zones: readonly string[];
  concurrency: number;
  hostKeys: HostKeyOptions;
  /** Wait this long for /health after a start (default 30 s). */
  healthTimeoutMs?: number;
  /** Give an agent this long to stop cleanly before it is killed (default 30 s). */
  stopTimeoutSeconds?: number;
  /** Free space needed on the dataDir's filesystem (default: twice the bundle plus 1 MiB). */
  minFreeBytes?: number;
  /** Oldest Node.js major version accepted on the nodes. */
  minNodeMajor?: number;
  /** Segment count when the store has no map yet (else the map's). */
  segments: number;
  /**
   * With the Consul store: where the agents read the location map at start,
   * for shards a crash left in the middle of a migration (a node's consulAddr
   * replaces addr). The token, if any, goes to the node in a 0600 file.
   */
  consul?: { addr: string; prefix: string; token?: string };
  /**
   * Register a freshly installed node even when the map already gives it shards its agent does not
   * hold (their data lost for good): they are created empty. Without it such a node is refused.
   */
  acceptEmptyShards?: boolean;
}

export interface DeployDeps {
  store: LocationStore;
  connect?: ConnectNode;
  progress?: (nodeId: string, event: ProgressEvent) => void;
  /** Warnings and notes for stderr. */
  log?: (msg: string) => void;
  now?: () => number;
  /** How the caller interrupts the deploy (SIGINT/SIGTERM). */
  control?: DeployControl;
}

interface NodeContext {
  node: InventoryNode;
  opts: DeployOptions & { connectFn: ConnectNode };
  segments: number;
  /** What the location map said of the node when the deploy began: none (no map yet), or listed or not. */
  inMap: "no map" | "listed" | "not listed";
  exec?: Executor;
  facts?: PlatformFacts;
  /** The release to install: the bundle (uploaded), or with --rollback one kept on the node (copied). */
  target?: { sha256: string; bytes: number; kept: boolean };
  settings?: AgentSettings;
  fingerprint?: string;
  /** Files to write besides the bundle, by name. */
  files?: Map<string, { content: string; mode: number }>;
  createdDir: boolean;
  wasRunning: boolean;
  stoppedAt?: number;
  healthyAt?: number;
  unitBackedUp: boolean;
  progress: (e: ProgressEvent) => void;
  /** Set once the node's cut-over (or repair) has begun: an interruption no longer stops it. */
  pastNoReturn: boolean;
  repaired?: string;
}

/** A digest of everything that makes an install what it is, so a re-run can tell "up to date". */
export function installFingerprint(
  bundleSha: string,
  files: Map<string, { content: string; mode: number }>,
  token: string,
): string {
  const tokenDigest = createHash("sha256").update(token).digest("hex");
  const h = createHash("sha256").update(`${bundleSha}\0${tokenDigest}`);
  for (const [name, f] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
    if (name === "installed" || name === "token") continue; // the token enters as its digest, above
    h.update(`\0${name}\0${f.mode}\0${f.content}`);
  }
  return h.digest("hex");
}

const connectTask: Task<NodeContext> = {
  name: "connect",
  async execute(ctx) {
    ctx.exec = await ctx.opts.connectFn(ctx.node, ctx.opts.hostKeys, () =>
      ctx.progress({ step: "connect", detail: "host key accepted and added to known_hosts" }),
    );
  },
};

const probeTask: Task<NodeContext> = {
  name: "check platform",
  async execute(ctx) {
    const r = await run(ctx.exec!, "the platform probe", ["sh", "-c", PROBE_SCRIPT, "sh", ctx.node.dataDir], {
      timeoutMs: 30_000,
    });
    const f = parseProbe(r.stdout);
    ctx.facts = f;
    const min = ctx.opts.minNodeMajor ?? 20;
    if (!f.nodePath)
      throw new UserError(
        `Node.js is not installed on ${ctx.node.host} (no \`node\` on the PATH of ${ctx.node.user})`,
        { hint: `install Node.js ${min} or later there` },
      );
    const major = nodeMajor(f.nodeVersion);
    if (major === undefined || major < min) {
      throw new UserError(
        `Node.js on ${ctx.node.host} is ${f.nodeVersion ?? "of unknown version"}; the agent needs ${min} or later`,
        {
          hint: `upgrade Node.js at ${f.nodePath}`,
        },
      );
    }
    if (!f.hasSha256sum || !f.hasTimeout)
      throw new UserError(
        `${f.hasSha256sum ? "timeout" : "sha256sum"} is not installed on ${ctx.node.host}`,
        {
          hint: "install coreutils there",
        },
      );
    // another node's install (its agent.json): deploying here would take it over, and undeploying
    // that node later would stop this one
    if (f.installedNode && f.installedNode !== ctx.node.id)
      throw new UserError(
        `${ctx.node.dataDir} on ${ctx.node.host} holds the agent of node ${f.installedNode}, not ${ctx.node.id} (its agent.json)`,
        {
          hint: `give ${ctx.node.id} a dataDir of its own in the inventory, or undeploy ${f.installedNode} first (\`shardctl undeploy ${f.installedNode}\`)`,
        },
      );
    // data of shards the cluster's map does not give this node: another cluster's install (deploying
    // here would take it over, serving that cluster's data and refusing most keys), or a map lost
    if (f.heldShards > 0 && ctx.inMap !== "listed")
      throw new UserError(
        `${ctx.node.dataDir}/data on ${ctx.node.host} holds ${f.heldShards} shard(s) of data, and ${ctx.inMap === "no map" ? "this cluster has no location map yet" : `this cluster's location map does not list ${ctx.node.id}`}: another cluster's install?`,
        {
          hint: `undeploy it from the cluster it belongs to (\`shardctl undeploy ${ctx.node.id} --purge\` with that cluster's config), move ${ctx.node.dataDir}/data away, or give ${ctx.node.id} another dataDir`,
        },
      );
    ctx.wasRunning = f.running;
    const settings: AgentSettings = {
      nodeId: ctx.node.id,
      zone: ctx.node.zone,
      listen: ctx.node.listen,
      advertise: ctx.node.advertise,
      zones: ctx.opts.zones,
      segments: ctx.segments,
      dataDir: ctx.node.dataDir,
      nodePath: f.nodePath,
      mode: f.systemd && f.uid === 0 ? "systemd" : "process",
      ...(ctx.opts.consul
        ? {
            consul: {
              addr: ctx.node.consulAddr ?? ctx.opts.consul.addr,
              prefix: ctx.opts.consul.prefix,
              tokenFile: ctx.opts.consul.token !== undefined,
            },
          }
        : {}),
    };
    ctx.settings = settings;
    // with --rollback the release is chosen from what the node keeps (findPreviousTask)
    if (ctx.opts.bundle) {
      ctx.target = { sha256: ctx.opts.bundle.sha256, bytes: ctx.opts.bundle.bytes, kept: false };
      planFiles(ctx);
    }
  },
};

/** The files of an install of ctx.target with ctx.settings, and its fingerprint. */
function planFiles(ctx: NodeContext): void {
  const settings = ctx.settings!;
  const sha256 = ctx.target!.sha256;
  const config = {
    nodeId: settings.nodeId,
    zone: settings.zone,
    listen: settings.listen,
    advertise: settings.advertise,
    zones: settings.zones,
    segments: settings.segments,
    mode: settings.mode,
    bundleSha256: sha256,
  };
  const files = new Map<string, { content: string; mode: number }>([
    ["agent.sh", { content: agentScript(settings), mode: 0o700 }],
    ["supervise.sh", { content: superviseScript(settings), mode: 0o700 }],
    ["ctl.sh", { content: ctlScript(settings), mode: 0o700 }],
    ["agent.json", { content: JSON.stringify(config, null, 2) + "\n", mode: 0o600 }],
    ["token", { content: ctx.opts.token + "\n", mode: 0o600 }],
  ]);
  // always written (empty without a token), so that a token from an earlier deploy never stays behind
  const consulToken = ctx.opts.consul?.token;
  files.set("consul-token", { content: consulToken !== undefined ? consulToken + "\n" : "", mode: 0o600 });
  ctx.fingerprint = installFingerprint(sha256, files, ctx.opts.token);
  files.set("installed", { content: `${ctx.fingerprint} ${sha256}\n`, mode: 0o600 });
  ctx.files = files;
}

/** --rollback: the release the node ran most recently before its current one, kept in releases/. */
const findPreviousTask: Task<NodeContext> = {
  name: "find the previous release",
  async execute(ctx) {
    const f = ctx.facts!;
    const previous = f.releases.find((r) => r.sha256 !== f.bundleOnDisk);
    if (!previous) {
      throw new UserError(
        `no earlier release is kept on ${ctx.node.id} (${ctx.node.dataDir}/${RELEASES_DIR} ${f.releases.length ? "holds only the release it runs" : "is empty"}): it was never upgraded, or by a shardctl that did not keep releases`,
        {
          hint: `deploy the release you want to go back to with \`shardctl deploy --bundle FILE --nodes ${ctx.node.id}\``,
        },
      );
    }
    ctx.target = { ...previous, kept: true };
    planFiles(ctx);
  },
};

/**
 * The connection for a rollback: the one in use, or — when it was lost (a cut
 * link is a reason to roll back) — one new connection, so that the node is
 * cleaned up all the same.
 */
async function liveExec(ctx: NodeContext): Promise<Executor> {
  if (ctx.exec?.isOpen()) return ctx.exec;
  await ctx.exec?.close().catch(() => undefined);
  ctx.progress({ step: "reconnect for the rollback" });
  ctx.exec = await ctx.opts.connectFn(ctx.node, ctx.opts.hostKeys, () => {});
  return ctx.exec;
}

/** Only an install needs room: an up-to-date node with a full disk is left alone. */
const diskSpaceTask: Task<NodeContext> = {
  name: "check disk space",
  async execute(ctx) {
    const f = ctx.facts!;
    const need = ctx.opts.minFreeBytes ?? ctx.target!.bytes * 2 + (1 << 20);
    if (f.freeBytes === undefined)
      throw new UserError(
        `cannot read the free disk space of ${ctx.node.dataDir} on ${ctx.node.host} (df -Pk)`,
      );
    if (f.freeBytes < need) {
      throw new UserError(
        `not enough disk space on ${ctx.node.host} for ${ctx.node.dataDir}: ${kib(f.freeBytes)} free, the bundle needs ${kib(need)}`,
        { hint: "free space there or choose another dataDir in the inventory" },
      );
    }
  },
};

function kib(bytes: number): string {
  return `${Math.floor(bytes / 1024)} KiB`;
}

const prepareTask: Task<NodeContext> = {
  name: "prepare directory",
  async execute(ctx) {
    const r = await run(ctx.exec!, `creating ${ctx.node.dataDir}`, [
      "sh",
      "-c",
      // a directory that exists keeps its mode (it may be shared: /tmp, a mount point); one made here is 0700
      'if [ -d "$1" ]; then echo existed; else mkdir -p "$1" && chmod 700 "$1" || exit 1; fi; ' +
        '{ [ -d "$1/data" ] || mkdir -m 700 "$1/data"; } && rm -rf "$1/.staging" && mkdir -m 700 "$1/.staging"',
      "sh",
      ctx.node.dataDir,
    ]);
    ctx.createdDir = !r.stdout.includes("existed");
  },
  async rollback(ctx) {
    const exec = await liveExec(ctx);
    await run(exec, "removing the staging directory", ["rm", "-rf", `${ctx.node.dataDir}/.staging`]);
    // a directory this deploy created is removed if nothing else is in it
    if (ctx.createdDir)
      await exec.exec(["sh", "-c", 'rmdir "$1/data" "$1" 2>/dev/null; true', "sh", ctx.node.dataDir]);
  },
};

const uploadTask: Task<NodeContext> = {
  name: "upload bundle",
  async execute(ctx) {
    const target = `${ctx.node.dataDir}/.staging/agent.mjs`;
    let last = -1;
    try {
      await ctx.exec!.upload(ctx.opts.bundle!.path, target, {
        mode: 0o600,
        onProgress: (sent, total) => {
          const pct = total ? Math.floor((sent / total) * 100) : 0;
          if (pct !== last) {
            last = pct;
            ctx.progress({ step: "upload bundle", percent: pct });
          }
        },
      });
    } catch (err) {
      // the usual reason an upload fails half way on a live connection: the disk filled up
      const probe = await ctx
        .exec!.exec(["df", "-Pk", `${ctx.node.dataDir}/.staging`])
        .catch(() => undefined);
      const free =
        probe && probe.code === 0
          ? parseProbe(`df=${probe.stdout.trim().split("\n").pop()}`).freeBytes
          : undefined;
      const disk =
        free !== undefined && free < ctx.opts.bundle!.bytes ? ` (the disk is full: ${kib(free)} free)` : "";
      throw new Error(`${(err as Error).message}${disk}`, { cause: err });
    }
  },
};

/** --rollback: the kept release is copied into .staging (kept where it is, should the cut-over fail). */
const copyKeptTask: Task<NodeContext> = {
  name: "copy kept release",
  async execute(ctx) {
    const dir = ctx.node.dataDir;
    await run(ctx.exec!, "copying the kept release", [
      "sh",
      "-c",
      'cp "$1/releases/$2.mjs" "$1/.staging/agent.mjs" && chmod 600 "$1/.staging/agent.mjs"',
      "sh",
      dir,
      ctx.target!.sha256,
    ]);
  },
};

const verifyTask: Task<NodeContext> = {
  name: "verify checksum",
  async execute(ctx) {
    // the file on standard input: GNU sha256sum marks its output line with a leading backslash when
    // the file's name holds one (or a newline), which a dataDir may
    const r = await run(ctx.exec!, "sha256sum", [
      "sh",
      "-c",
      'sha256sum < "$1"',
      "sh",
      `${ctx.node.dataDir}/.staging/agent.mjs`,
    ]);
    const got = r.stdout.trim().split(/\s+/)[0];
    const want = ctx.target!.sha256;
    if (got !== want) {
      throw new Error(
        ctx.target!.kept
          ? `the kept release ${RELEASES_DIR}/${want}.mjs on ${ctx.node.host} has the sha256 ${got}: it was changed or damaged there`
          : `the uploaded bundle's sha256 on ${ctx.node.host} is ${got}, not ${want}: the upload was corrupted`,
      );
    }
  },
};

const writeConfigTask: Task<NodeContext> = {
  name: "write config",
  async execute(ctx) {
    const files = [...ctx.files!].map(([name, f]) => ({ name, content: f.content, mode: f.mode }));
    const input = JSON.stringify({ dir: `${ctx.node.dataDir}/.staging`, files });
    await run(ctx.exec!, "writing the config", [ctx.facts!.nodePath!, "-e", WRITE_FILES_JS], {
      stdin: input,
    });
  },
};

const stopOldTask: Task<NodeContext> = {
  name: "stop (drain)",
  async execute(ctx) {
    if (!ctx.wasRunning) return;
    // From here until an agent runs again the node has none: should this deploy die before that,
    // the next one finds the marker and starts the release the node ran (repairTask).
    await run(ctx.exec!, "marking the cut-over", [
      "sh",
      "-c",
      'umask 077; printf "%s %s\\n" "$2" "$3" > "$1/.cutover"',
      "sh",
      ctx.node.dataDir,
      ctx.facts!.bundleOnDisk ?? "",
      ctx.target!.sha256,
    ]);
    ctx.stoppedAt = Date.now();
    await run(
      ctx.exec!,
      "stopping the running agent",
      ["sh", `${ctx.node.dataDir}/ctl.sh`, "stop", String(ctx.opts.stopTimeoutSeconds ?? 30)],
      {
        timeoutMs: ((ctx.opts.stopTimeoutSeconds ?? 30) + 15) * 1000,
      },
    );
  },
  async rollback(ctx) {
    if (!ctx.wasRunning) return;
    const exec = await liveExec(ctx);
    // the previous files are back in place by now (swap rolled back first)
    await run(exec, "restarting the previous agent", ["sh", `${ctx.node.dataDir}/ctl.sh`, "start"]);
    await waitHealthy(ctx, ctx.opts.healthTimeoutMs ?? 30_000);
    // only once it runs: a rollback that fails leaves the marker for the next deploy to repair
    await run(exec, "clearing the cut-over marker", ["rm", "-f", `${ctx.node.dataDir}/${CUTOVER_MARKER}`]);
  },
};

const swapTask: Task<NodeContext> = {
  name: "swap into place",
  async execute(ctx) {
    await run(ctx.exec!, "moving the new files into place", [
      "sh",
      "-c",
      SWAP_SCRIPT,
      "sh",
      ctx.node.dataDir,
      ...AGENT_FILES,
    ]);
  },
  async rollback(ctx) {
    const exec = await liveExec(ctx);
    await run(exec, "restoring the previous files", [
      "sh",
      "-c",
      UNSWAP_SCRIPT,
      "sh",
      ctx.node.dataDir,
      ...AGENT_FILES,
    ]);
  },
};

const serviceTask: Task<NodeContext> = {
  name: "install service",
  async execute(ctx) {
    if (ctx.settings!.mode !== "systemd") return;
    const unit = unitPath(ctx.node.id);
    const r = await ctx.exec!.exec([
      "sh",
      "-c",
      'if [ -f "$1" ]; then cp -p "$1" "$2/.prev/unit"; echo backed-up; fi',
      "sh",
      unit,
      ctx.node.dataDir,
    ]);
    ctx.unitBackedUp = r.stdout.includes("backed-up");
    await writeRemoteFile(ctx.exec!, unit, unitFile(ctx.settings!), 0o644);
    await run(ctx.exec!, "systemctl daemon-reload", ["systemctl", "daemon-reload"]);
    await run(ctx.exec!, "systemctl enable", ["systemctl", "enable", unitName(ctx.node.id)]);
  },
  async rollback(ctx) {
    if (ctx.settings?.mode !== "systemd") return;
    const exec = await liveExec(ctx);
    const unit = unitPath(ctx.node.id);
    if (ctx.unitBackedUp)
      await run(exec, "restoring the unit", ["cp", "-p", `${ctx.node.dataDir}/.prev/unit`, unit]);
    else {
      await exec.exec(["systemctl", "disable", unitName(ctx.node.id)]);
      await run(exec, "removing the unit", ["rm", "-f", unit]);
    }
    await exec.exec(["systemctl", "daemon-reload"]);
  },
};

const startTask: Task<NodeContext> = {
  name: "start",
  async execute(ctx) {
    await run(ctx.exec!, "starting the agent", ["sh", `${ctx.node.dataDir}/ctl.sh`, "start"]);
  },
  async rollback(ctx) {
    const exec = await liveExec(ctx);
    await run(exec, "stopping the new agent", ["sh", `${ctx.node.dataDir}/ctl.sh`, "stop", "10"], {
      timeoutMs: 30_000,
    });
  },
};

const healthTask: Task<NodeContext> = {
  name: "wait for health",
  async execute(ctx) {
    await waitHealthy(ctx, ctx.opts.healthTimeoutMs ?? 30_000);
    ctx.healthyAt = Date.now();
    ctx.progress({ step: "healthy" });
  },
};

/** One health attempt: the agent's /health from the node, or "stopped" when ctl.sh says it is not running. */
const HEALTH_SCRIPT = `"$1" -e "$2" "$3" "$4" "$5" && exit 0
if ! sh "$5/ctl.sh" status >/dev/null 2>&1; then echo " stopped"; fi
exit 1
`;

async function waitHealthy(ctx: NodeContext, timeoutMs: number): Promise<void> {
  const exec = ctx.exec!;
  const url = localHealthUrl(ctx.node.listen);
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const r = await exec.exec(
      ["sh", "-c", HEALTH_SCRIPT, "sh", ctx.facts!.nodePath!, HEALTH_JS, url, ctx.node.id, ctx.node.dataDir],
      {
        timeoutMs: 15_000,
      },
    );
    if (r.code === 0) return;
    const stopped = r.stdout.endsWith(" stopped\n");
    const seen = r.stdout.replace(/ stopped\n$/, "").trim();
    if (stopped || Date.now() > deadline) {
      const logs = await exec.exec(["sh", `${ctx.node.dataDir}/ctl.sh`, "logs", "8"]);
      const other = seen.includes('"dataDir":"another"');
      throw new UserError(
        `the agent on ${ctx.node.host} ${stopped ? "exited" : `did not answer ${url} within ${Math.round(timeoutMs / 1000)} s`} (last answer: ${seen || "none"})` +
          (other
            ? `; the agent answering there serves another data directory than ${ctx.node.dataDir}: an install elsewhere (an earlier dataDir of ${ctx.node.id}?) still runs on that address`
            : "") +
          (logs.stdout.trim() ? `; its log ends with:\n${lastLines(logs.stdout, 8)}` : ""),
        {
          hint: other
            ? `stop the agent of the earlier install (\`shardctl node stop ${ctx.node.id}\` with the inventory that names its dataDir), or give ${ctx.node.id} another address`
            : `\`shardctl node logs ${ctx.node.id}\` shows more`,
        },
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * After a successful install: keeps the release it replaced in releases/ (pruned to keepReleases),
 * clears the cut-over marker, removes .prev and .staging. Best effort — the new agent runs either
 * way; what is left is cleared by the next deploy — but said in the progress.
 */
async function commitInstall(ctx: NodeContext, current: string, replaced: string): Promise<void> {
  const keep = ctx.opts.keepReleases ?? DEFAULT_KEEP_RELEASES;
  const r = await ctx
    .exec!.exec(["sh", "-c", COMMIT_SCRIPT, "sh", ctx.node.dataDir, String(keep), current, replaced])
    .catch((err: Error) => ({ code: -1, stdout: "", stderr: err.message }));
  if (r.code !== 0)
    ctx.progress({
      step: "keep the replaced release",
      detail: `not done (${lastLines(r.stderr || r.stdout, 1) || `exit ${r.code}`}); the next deploy clears it up`,
    });
}

function short(sha: string): string {
  return sha ? sha.slice(0, 12) : "none";
}

/**
 * A node where a deploy was interrupted in the middle of a cut-over (the
 * CUTOVER_MARKER is there): its agent ran before that deploy, and may have
 * been left stopped. An agent that runs and answers is kept (the cut-over got
 * that far); otherwise the files that cut-over replaced (.prev, and the
 * systemd unit) are put back and the release the node ran is started again.
 * Then the deploy goes on as usual, from a node that runs its agent.
 */
const repairTask: Task<NodeContext> = {
  name: "repair interrupted cut-over",
  async execute(ctx) {
    const f = ctx.facts!;
    const exec = ctx.exec!;
    const dir = ctx.node.dataDir;
    const { from, to } = f.cutover!;
    const what = `an interrupted cut-over (from ${short(from)} to ${short(to)})`;
    const healthMs = ctx.opts.healthTimeoutMs ?? 30_000;
    if (f.running) {
      try {
        await waitHealthy(ctx, Math.min(healthMs, 15_000));
        await commitInstall(ctx, f.bundleOnDisk ?? "", from);
        ctx.repaired = `repaired ${what}: its agent runs and answers (${short(f.bundleOnDisk ?? "")}); kept it`;
        return;
      } catch {
        await run(exec, "stopping the agent that does not answer", ["sh", `${dir}/ctl.sh`, "stop", "10"], {
          timeoutMs: 30_000,
        });
      }
    }
    if (f.prevUnit && ctx.settings!.mode === "systemd") {
      await run(exec, "restoring the unit", ["cp", "-p", `${dir}/.prev/unit`, unitPath(ctx.node.id)]);
      await exec.exec(["systemctl", "daemon-reload"]);
    }
    if (f.prev)
      await run(exec, "restoring the previous files", ["sh", "-c", UNSWAP_SCRIPT, "sh", dir, ...AGENT_FILES]);
    try {
      await run(exec, "starting the previous agent", ["sh", `${dir}/ctl.sh`, "start"]);
      await waitHealthy(ctx, healthMs);
    } catch (err) {
      throw new UserError(
        `found ${what}; its agent was stopped, and the release it ran before does not start either: ${(err as Error).message}`,
        {
          hint: `\`shardctl node logs ${ctx.node.id}\` shows why; fix that and run the same deploy again (the marker ${dir}/${CUTOVER_MARKER} stays until the node runs an agent)`,
          cause: err,
        },
      );
    }
    await run(exec, "clearing the cut-over marker", ["rm", "-f", `${dir}/${CUTOVER_MARKER}`]);
    ctx.repaired = `repaired ${what}: its agent was stopped; started the release it ran before (${short(from)}) again`;
  },
};

async function deployNode(
  node: InventoryNode,
  opts: DeployOptions & { connectFn: ConnectNode },
  segments: number,
  inMap: NodeContext["inMap"],
  rolling: RollingUpgrade,
  control: DeployControl | undefined,
  emit: (e: ProgressEvent) => void,
): Promise<NodeReport> {
  const started = Date.now();
  const ctx: NodeContext = {
    node,
    opts,
    segments,
    inMap,
    createdDir: false,
    wasRunning: false,
    unitBackedUp: false,
    progress: emit,
    pastNoReturn: false,
  };
  const onStep = (step: string) => emit({ step });
  // An interruption stops the node before its next task — until its cut-over has begun: from the
  // stop of its agent on, the node is carried through to an agent that runs (new or previous).
  const gate = (task: Task<NodeContext>) => {
    if (control?.interrupted && !ctx.pastNoReturn)
      throw new InterruptedError(
        control.interrupted,
        "before this node's cut-over began: its agent was left as it was (anything staged was removed)",
      );
    if (task === stopOldTask) {
      ctx.pastNoReturn = true;
      control?.cutoverStarted(node.id);
    }
  };
  const base = {
    id: node.id,
    host: node.host,
    address: node.advertise,
    zone: node.zone,
  };
  try {
    await runTasks([connectTask, probeTask], ctx, onStep, gate);
    if (ctx.facts!.cutover) {
      await rolling.exclusive(async () => {
        if (control?.interrupted)
          throw new TaskError(
            INTERRUPTED_STEP,
            new InterruptedError(
              control.interrupted,
              "before the cut-over an earlier deploy left unfinished here was repaired: its agent may still be stopped",
            ),
            [],
          );
        control?.cutoverStarted(node.id);
        try {
          await runTasks([repairTask], ctx, onStep);
        } finally {
          control?.cutoverEnded(node.id);
        }
      });
      // the node runs an agent again: on from there, with what is on it now
      await runTasks([probeTask], ctx, onStep, gate);
    }
    if (opts.rollback) await runTasks([findPreviousTask], ctx, onStep, gate);
    const f = ctx.facts!;
    const target = ctx.target!;
    const current =
      f.installedFingerprint === ctx.fingerprint &&
      f.installedBundle === target.sha256 &&
      f.bundleOnDisk === target.sha256;
    let outcome: Outcome;
    if (current && f.running) {
      await runTasks([healthTask], ctx, onStep, gate);
      outcome = ctx.repaired ? "repaired" : "up-to-date";
    } else if (current) {
      await runTasks([startTask, healthTask], ctx, onStep, gate);
      outcome = "started";
    } else {
      const staging = [
        diskSpaceTask,
        prepareTask,
        target.kept ? copyKeptTask : uploadTask,
        verifyTask,
        writeConfigTask,
      ];
      const cutover = [stopOldTask, swapTask, serviceTask, startTask, healthTask];
      // a running agent is replaced one node at a time: stop, swap, start, healthy — then the next
      const tasks = f.running
        ? [...staging, rolling.group(node.id, f.installedBundle, cutover, onStep)]
        : [...staging, ...cutover];
      await runTasks(tasks, ctx, onStep, gate);
      await commitInstall(ctx, target.sha256, f.bundleOnDisk ?? "");
      outcome = opts.rollback ? "rolled-back" : f.installedBundle ? "upgraded" : "installed";
    }
    emit({ step: outcome, final: outcome });
    const downtimeMs = ctx.stoppedAt && ctx.healthyAt ? ctx.healthyAt - ctx.stoppedAt : undefined;
    return {
      ...base,
      bundleSha256: target.sha256,
      outcome,
      mode: ctx.settings?.mode,
      durationMs: Date.now() - started,
      ...(downtimeMs ? { downtimeMs } : {}),
      ...(ctx.repaired ? { repaired: ctx.repaired } : {}),
    };
  } catch (err) {
    const te =
      err instanceof TaskError
        ? err
        : new TaskError(err instanceof InterruptedError ? INTERRUPTED_STEP : "deploy", err, []);
    const original = te.original;
    emit({ step: te.step, final: "failed", detail: te.message.split("\n")[0] });
    let hint = original instanceof HostKeyError || original instanceof UserError ? original.hint : undefined;
    if (rolling.halted?.nodeId === node.id) hint = [hint, rolling.haltHint()].filter(Boolean).join("; ");
    return {
      ...base,
      bundleSha256: ctx.target?.sha256 ?? opts.bundle?.sha256,
      outcome: "failed",
      mode: ctx.settings?.mode,
      step: te.step,
      error: te.message,
      hint,
      hostKeyFingerprint: original instanceof HostKeyError ? original.fingerprint : undefined,
      rollbackErrors: te.rollbackErrors.length ? te.rollbackErrors : undefined,
      durationMs: Date.now() - started,
      ...(ctx.repaired ? { repaired: ctx.repaired } : {}),
    };
  } finally {
    control?.cutoverEnded(node.id);
    await ctx.exec?.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------- the cluster

export interface DeployResult {
  /** The bundle shipped (none with --rollback: each node's report names the release it got). */
  bundle?: { sha256: string; bytes: number };
  rollback?: true;
  /** The signal that interrupted the deploy (the nodes not cut over yet report the step "interrupted"). */
  interrupted?: string;
  nodes: NodeReport[];
  /** Nodes added to (or updated in) the location map. */
  registered: string[];
  layoutWritten: boolean;
  /** Shards created on agents that did not hold them yet. */
  shardsAssigned: number;
  warnings: string[];
}

/**
 * A --keep-releases value: a whole number from 1 to MAX_KEEP_RELEASES (0 would leave nothing to
 * roll back to; a string is read as written, digits only).
 */
export function checkKeepReleases(value: number | string, what = "keepReleases"): number {
  const n = typeof value === "number" ? value : /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_KEEP_RELEASES) {
    throw new UsageError(
      `${what} must be a whole number from 1 to ${MAX_KEEP_RELEASES}, got ${JSON.stringify(String(value))}`,
      {
        hint: `it is how many releases each node keeps for \`deploy --rollback\` besides the one it runs (default ${DEFAULT_KEEP_RELEASES})`,
      },
    );
  }
  return n;
}

/**
 * How long an interrupted deploy may take to finish the cut-over in progress: the stop, then the
 * new agent's start and health wait, and — if it does not come up — the previous one's, with room
 * for the commands in between.
 */
export function interruptBoundSeconds(healthTimeoutMs = 30_000, stopTimeoutSeconds = 30): number {
  return stopTimeoutSeconds + 15 + 2 * Math.ceil(healthTimeoutMs / 1000) + 30;
}

export async function runDeploy(opts: DeployOptions, deps: DeployDeps): Promise<DeployResult> {
  const log = deps.log ?? (() => {});
  const progress = deps.progress ?? (() => {});
  if (opts.rollback ? opts.bundle : !opts.bundle)
    throw new UsageError(
      opts.rollback
        ? "a rollback installs a release kept on each node: it takes no bundle"
        : "nothing to deploy: no bundle",
    );
  if (opts.keepReleases !== undefined) checkKeepReleases(opts.keepReleases);
  const control = deps.control;
  // the agents must cut the key space as the map does
  const before = await deps.store.load({ consistent: true });
  const segments = before?.map.segmentCount ?? opts.segments;
  const rolling = new RollingUpgrade(control);
  const withConnect = { ...opts, connectFn: deps.connect ?? connectNode };
  const settled = await mapBounded(opts.nodes, Math.max(1, opts.concurrency), (node) =>
    deployNode(
      node,
      withConnect,
      segments,
      !before ? "no map" : before.map.nodes.some((n) => n.id === node.id) ? "listed" : "not listed",
      rolling,
      control,
      (e) => progress(node.id, e),
    ),
  );
  const reports = settled.map((s, i): NodeReport => {
    if (s.status === "fulfilled") return s.value;
    const n = opts.nodes[i];
    return {
      id: n.id,
      host: n.host,
      address: n.advertise,
      zone: n.zone,
      outcome: "failed",
      error: String((s.reason as Error)?.message ?? s.reason),
      durationMs: 0,
    };
  });
  if (before && !opts.acceptEmptyShards) await refuseDatalessInstalls(before.map, reports, opts.token);
  const healthy = reports.filter((r) => r.outcome !== "failed");
  const failed = reports.filter((r) => r.outcome === "failed");
  const warnings: string[] = [];
  let registered: string[] = [];
  let layoutWritten = false;
  let shardsAssigned = 0;
  const interrupted = control?.interrupted;
  // The first deploy defines the layout over the nodes it deploys: written over only the nodes that
  // happened to come up, it would leave the failed ones without shards after the re-run that fixes them.
  const holdLayout =
    !interrupted && healthy.length > 0 && failed.length > 0 && !(await deps.store.load({ consistent: true }));
  if (interrupted) {
    // an interrupted deploy ends as soon as no node is left without an agent
    if (healthy.length)
      warnings.push(
        `deploy was interrupted (${interrupted}): ${healthy.map((r) => r.id).join(", ")} not registered in the location map this time (nor given shards) — the next deploy does it`,
      );
  } else if (holdLayout) {
    warnings.push(
      `no initial layout written: ${failed.map((r) => r.id).join(", ")} failed, and the first deploy spreads the shards over all of its nodes; ` +
        `the agents that came up (${healthy.map((r) => r.id).join(", ")}) keep running without shards — fix the failed nodes and run the same deploy again`,
    );
  } else if (healthy.length) {
    const nodes = healthy.map((r) => ({ id: r.id, address: r.address, zone: r.zone }));
    const reg = await registerInMap(deps.store, nodes, segments, deps.now ?? Date.now);
    registered = reg.changed;
    layoutWritten = reg.layoutWritten;
    if (reg.layoutWritten)
      log(`wrote the initial layout: ${reg.map.shards.length} shards over ${nodes.length} node(s)`);
    if (deps.store.kind === "consul") {
      for (const n of nodes) {
        try {
          await registerConsulService(deps.store, n);
        } catch (err) {
          warnings.push(`${n.id}: not registered as a Consul service: ${(err as Error).message}`);
        }
      }
    }
    const assigned = await assignShards(reg.map, new Set(nodes.map((n) => n.id)), opts.token, warnings);
    shardsAssigned = assigned;
  }
  for (const w of warnings) log(`warning: ${w}`);
  return {
    ...(opts.bundle ? { bundle: { sha256: opts.bundle.sha256, bytes: opts.bundle.bytes } } : {}),
    ...(opts.rollback ? { rollback: true as const } : {}),
    ...(interrupted ? { interrupted } : {}),
    nodes: reports,
    registered,
    layoutWritten,
    shardsAssigned,
    warnings,
  };
}

/**
 * Adds the nodes to the map's node list (or updates their address and zone),
 * by compare-and-set against the version read, retrying a lost race. Without
 * a map yet, writes the initial layout over these nodes.
 */
export async function registerInMap(
  store: LocationStore,
  nodes: NodeInfo[],
  segments: number,
  now: () => number,
): Promise<{ map: LocationMap; changed: string[]; layoutWritten: boolean }> {
  return updateMap<{ map: LocationMap; changed: string[]; layoutWritten: boolean }>(
    store,
    (vm) => {
      if (!vm) {
        const map = initialLayout(segments, nodes, { now: now() });
        return { write: map, then: { map, changed: nodes.map((n) => n.id), layoutWritten: true } };
      }
      // an operator's write (term 0), not the last writer's term, which a later leader may have made stale
      const next: LocationMap = { ...structuredClone(vm.map), term: 0 };
      const changed: string[] = [];
      for (const n of nodes) {
        const existing = next.nodes.find((x) => x.id === n.id);
        if (!existing) {
          next.nodes.push({ ...n });
          changed.push(n.id);
        } else if (existing.address !== n.address || existing.zone !== n.zone) {
          existing.address = n.address;
          existing.zone = n.zone;
          changed.push(n.id);
        }
      }
      if (changed.length === 0) return { done: { map: vm.map, changed, layoutWritten: false } };
      next.updatedAt = now();
      return { write: next, then: { map: next, changed, layoutWritten: false } };
    },
    () => {
      throw new UserError("the location map kept changing while the nodes were being registered", {
        hint: "run deploy again (it is idempotent)",
      });
    },
  );
}

/** Removes a node from the map's node list (it must own no shard). */
export async function deregisterFromMap(
  store: LocationStore,
  nodeId: string,
  now: () => number,
): Promise<boolean> {
  return updateMap<boolean>(
    store,
    (vm) => {
      if (!vm || !vm.map.nodes.some((n) => n.id === nodeId)) return { done: false };
      if (vm.map.shards.some((s) => s.node === nodeId)) throw ownsShardsError(nodeId, vm.map);
      const next: LocationMap = {
        ...structuredClone(vm.map),
        nodes: vm.map.nodes.filter((n) => n.id !== nodeId),
        term: 0,
        updatedAt: now(),
      };
      return { write: next, then: true };
    },
    () => {
      throw new UserError("the location map kept changing while the node was being removed", {
        hint: "run undeploy again",
      });
    },
  );
}

async function registerConsulService(store: LocationStore, node: NodeInfo): Promise<void> {
  const services = await import("../consul/services.js");
  const http = (store as unknown as { http?: import("../consul/http.js").ConsulHttp }).http;
  if (!http) return;
  await services.registerAgentService(http, node);
}

async function deregisterConsulService(store: LocationStore, nodeId: string): Promise<void> {
  const services = await import("../consul/services.js");
  const http = (store as unknown as { http?: import("../consul/http.js").ConsulHttp }).http;
  if (!http) return;
  await services.deregisterAgentService(http, nodeId);
}

/**
 * A node the map already gives shards to, freshly installed (a data directory without an agent
 * before: another host or dataDir than its data's, or a replaced machine) and whose agent does not
 * hold them, is not registered: the map would point its shards at an agent without their data, and
 * the shards handed to it would be empty. Its report becomes a failure that says so; the map keeps
 * the node where it was (`--accept-empty-shards` registers it anyway, for data lost for good).
 */
async function refuseDatalessInstalls(map: LocationMap, reports: NodeReport[], token: string): Promise<void> {
  const fresh = reports.filter((r) => r.outcome === "installed" && map.shards.some((s) => s.node === r.id));
  if (fresh.length === 0) return;
  const rpc = new AgentRpc({ token, timeoutMs: 5000 });
  try {
    for (const r of fresh) {
      const owned = map.shards.filter((s) => s.node === r.id).map((s) => s.id);
      let missing: string[];
      try {
        const inv = await rpc.inventory(r.address);
        if (inv.status !== 200) throw new Error(`status ${inv.status}`);
        const held = new Set(inv.body.shards.map((s) => s.id));
        missing = owned.filter((id) => !held.has(id));
      } catch (err) {
        missing = owned;
        r.error = `cannot ask its agent at ${r.address} which shards it holds (${(err as Error).message}); `;
      }
      if (missing.length === 0) continue;
      const where = map.nodes.find((n) => n.id === r.id)?.address;
      const list =
        missing.slice(0, 5).join(", ") + (missing.length > 5 ? `, … (${missing.length - 5} more)` : "");
      r.outcome = "failed";
      r.step = "register";
      r.error =
        (r.error ?? "") +
        `${r.id} was installed afresh at ${r.address}, but the location map gives it ${owned.length} shard(s) this agent does not hold (${list}): ` +
        `their data is with the agent the map names${where ? ` (${where})` : ""}, so the map was left pointing there and no empty shard was created`;
      r.hint =
        `deploy ${r.id} with its earlier host and dataDir, or move its shards to other nodes first (\`shardctl migrate --shard <id> --to <node> --apply\`); ` +
        `if that data is lost for good, \`deploy --accept-empty-shards\` registers ${r.id} here with its shards empty. ` +
        `The agent installed here keeps running, outside the map`;
    }
  } finally {
    rpc.close();
  }
}

/** Creates, on each deployed agent, the shards the map gives it that it does not hold yet. */
async function assignShards(
  map: LocationMap,
  deployed: Set<string>,
  token: string,
  warnings: string[],
): Promise<number> {
  const rpc = new AgentRpc({ token, timeoutMs: 5000 });
  let n = 0;
  try {
    for (const node of map.nodes) {
      if (!deployed.has(node.id)) continue;
      const mine = map.shards.filter((s) => s.node === node.id);
      if (mine.length === 0) continue;
      let held: Set<string>;
      try {
        const inv = await rpc.inventory(node.address);
        if (inv.status !== 200) throw new Error(`status ${inv.status}`);
        held = new Set(inv.body.shards.map((s) => s.id));
      } catch (err) {
        warnings.push(
          `${node.id}: cannot reach its agent at ${node.address} from here to hand it its shards (${(err as Error).message})`,
        );
        continue;
      }
      for (const s of mine) {
        if (held.has(s.id)) continue;
        const r = await rpc.assignShard(node.address, s.id, {
          epoch: s.epoch,
          ranges: s.ranges,
          migrationTimestamp: s.migrationTimestamp,
        });
        if (r.status === 200 || r.status === 201) n++;
        else warnings.push(`${node.id} refused shard ${s.id} at epoch ${s.epoch}: ${JSON.stringify(r.body)}`);
      }
    }
  } finally {
    rpc.close();
  }
  return n;
}

function ownsShardsError(nodeId: string, map: LocationMap): PreconditionError {
  const owned = map.shards.filter((s) => s.node === nodeId).map((s) => s.id);
  const list = owned.slice(0, 5).join(", ") + (owned.length > 5 ? `, … (${owned.length - 5} more)` : "");
  return new PreconditionError(
    `node ${nodeId} still owns ${owned.length} shard(s) in the location map: ${list}`,
    {
      hint: `move them to other nodes first (\`shardctl migrate --shard <id> --to <node> --apply\` for each; \`shardctl plan --all\` shows the moves the planner would make), then run \`shardctl undeploy ${nodeId}\` again`,
    },
  );
}

// ---------------------------------------------------------------- undeploy and node control

export interface UndeployOptions {
  node: InventoryNode;
  hostKeys: HostKeyOptions;
  /** Also delete the data directory (the agent's shards). */
  purge: boolean;
}

export interface UndeployResult {
  node: string;
  stopped: string;
  removed: string[];
  deregistered: boolean;
}

/** The node id in a dataDir's agent.json (the install's owner), "" when there is none. */
const INSTALLED_NODE_SCRIPT = `if [ -f "$1/agent.json" ]; then ${agentJsonNode('"$1/agent.json"')}; fi
`;

/**
 * Refuses to act on a dataDir that holds another node's install (its agent.json names another
 * node: two inventory entries for one directory, e.g. by `localhost` and `127.0.0.1`): stopping,
 * restarting or undeploying "this" node would act on that node's agent, and a purge would delete
 * its shards. deploy refuses the same (the check-platform step).
 */
async function refuseOtherNodesInstall(exec: Executor, node: InventoryNode, doing: string): Promise<void> {
  const owner = (
    await run(exec, "reading the install's agent.json", [
      "sh",
      "-c",
      INSTALLED_NODE_SCRIPT,
      "sh",
      node.dataDir,
    ])
  ).stdout.trim();
  if (owner && owner !== node.id)
    throw new PreconditionError(
      `not ${doing} ${node.id}: ${node.dataDir} on ${node.host} holds the agent of node ${printable(owner)}, not ${node.id} (its agent.json); nothing was changed`,
      {
        hint: `check ${node.id}'s dataDir in the inventory: it is ${printable(owner)}'s (whose own entry acts on that agent)`,
      },
    );
}

/**
 * What only a shardctl install has (deploy's own files, or the agent's data: an undeploy without
 * --purge leaves data/ for a later --purge). The other names undeploy removes (token, installed,
 * releases, data, agent.log, …) are common words: another program's directory may hold them.
 */
const INSTALL_SIGNS = [
  "agent.json",
  "ctl.sh",
  "agent.mjs",
  "supervise.sh",
  ".staging",
  ".prev",
  CUTOVER_MARKER,
  "data/shards",
  "data/access-windows.bin",
];

/** Prints "install" when the dataDir ($1) has a sign of an install, else which of the names after it exist. */
const FOREIGN_FILES_SCRIPT = `d=$1; shift
for p in ${INSTALL_SIGNS.map((f) => shellQuote(f)).join(" ")}; do if [ -e "$d/$p" ] || [ -L "$d/$p" ]; then echo install; exit 0; fi; done
for p in "$@"; do if [ -e "$d/$p" ] || [ -L "$d/$p" ]; then printf '%s\\n' "$p"; fi; done
`;

/**
 * Refuses to remove files from a dataDir that holds no shardctl install but does hold files by the
 * names undeploy removes (a wrong dataDir in the inventory: another program's directory with its
 * own token, releases/ or data/). Nothing is changed; a directory with none of them is left alone.
 */
async function refuseForeignDirectory(
  exec: Executor,
  node: InventoryNode,
  names: readonly string[],
): Promise<void> {
  const out = (
    await run(exec, "checking the dataDir is an install", [
      "sh",
      "-c",
      FOREIGN_FILES_SCRIPT,
      "sh",
      node.dataDir,
      ...names,
    ])
  ).stdout.trim();
  if (out === "install" || out === "") return;
  const found = out.split("\n");
  throw new PreconditionError(
    `not undeploying ${node.id}: ${node.dataDir} on ${node.host} holds no shardctl install (no agent.json, ctl.sh or data/shards), but it holds ${found.map((f) => printable(f)).join(", ")}: they are not removed; nothing was changed`,
    {
      hint: `check ${node.id}'s dataDir in the inventory; a node that was never deployed there has nothing to undeploy`,
    },
  );
}

export async function runUndeploy(
  opts: UndeployOptions,
  deps: { store: LocationStore; connect?: ConnectNode; log?: (m: string) => void; now?: () => number },
): Promise<UndeployResult> {
  const { node } = opts;
  const vm = await deps.store.load({ consistent: true });
  if (vm && vm.map.shards.some((s) => s.node === node.id)) throw ownsShardsError(node.id, vm.map);
  const log = deps.log ?? (() => {});
  const exec = await connectOrExplain(node, opts.hostKeys, deps.connect ?? connectNode, log);
  const removed: string[] = [];
  let stopped = "not running";
  let deregistered: boolean | undefined;
  await failpoint("undeploy.connected");
  try {
    // (refused here, nothing has changed yet: the catch below passes the refusal on as it is)
    await refuseOtherNodesInstall(exec, node, "undeploying");
    const names = [
      ...AGENT_FILES,
      "agent.pid",
      "agent.stopping",
      ".staging",
      ".prev",
      CUTOVER_MARKER,
      RELEASES_DIR,
      ...(opts.purge ? ["data", "agent.log"] : []),
    ];
    await refuseForeignDirectory(exec, node, names);
    // Out of the map before its agent is touched, by compare-and-set with the check that it owns no
    // shard: a migration to it committed after the check above would otherwise lose its shard with
    // the agent (a move's commit refuses a target that is not in the map, so none can land after).
    deregistered = await deregisterFromMap(deps.store, node.id, deps.now ?? Date.now);
    const dir = node.dataDir;
    const ctl = await exec.exec(["test", "-f", `${dir}/ctl.sh`]);
    if (ctl.code === 0) {
      stopped = (
        await run(exec, "stopping the agent", ["sh", `${dir}/ctl.sh`, "stop", "30"], { timeoutMs: 60_000 })
      ).stdout.trim();
    }
    log(`${node.id}: ${stopped}`);
    const unit = unitPath(node.id);
    if ((await exec.exec(["test", "-f", unit])).code === 0) {
      await exec.exec(["systemctl", "disable", "--now", unitName(node.id)]);
      await run(exec, "removing the unit", ["rm", "-f", unit]);
      await exec.exec(["systemctl", "daemon-reload"]);
      removed.push(unit);
    }
    const paths = names.map((f) => `${dir}/${f}`);
    // removed: the paths that were there (a second undeploy removes nothing, and says so)
    const gone = await run(exec, "removing the agent's files", [
      "sh",
      "-c",
      'for p in "$@"; do if [ -e "$p" ] || [ -L "$p" ]; then printf "%s\\n" "$p"; fi; done; rm -rf -- "$@"',
      "sh",
      ...paths,
    ]);
    const existed = new Set(gone.stdout.split("\n"));
    removed.push(...paths.filter((p) => existed.has(p)));
    if (opts.purge) await exec.exec(["rmdir", "--", dir]);
  } catch (err) {
    // nothing changed while it was not out of the map yet (it owns shards: exit 3)
    if (deregistered === undefined) throw err;
    throw new UserError(
      `${node.id}: ${deregistered ? "removed from the location map" : "not in the location map"}, but stopping and removing its agent failed: ${(err as Error).message}`,
      { hint: `run \`shardctl undeploy ${node.id}\` again once the node answers`, cause: err },
    );
  } finally {
    await exec.close();
  }
  if (deps.store.kind === "consul") {
    try {
      await deregisterConsulService(deps.store, node.id);
    } catch (err) {
      log(`warning: ${node.id}: not deregistered from Consul: ${(err as Error).message}`);
    }
  }
  return { node: node.id, stopped, removed, deregistered: deregistered === true };
}

/** Connects, turning a refused host key into a UserError with its hint. */
export async function connectOrExplain(
  node: InventoryNode,
  hostKeys: HostKeyOptions,
  connect: ConnectNode,
  log: (m: string) => void,
): Promise<Executor> {
  try {
    return await connect(node, hostKeys, () =>
      log(`${node.id}: host key accepted and added to ${hostKeys.knownHostsFile}`),
    );
  } catch (err) {
    if (err instanceof HostKeyError)
      throw new UserError(`${node.id}: ${err.message}`, { hint: err.hint, cause: err });
    // the known_hosts file refused (changed since the command checked it): its own hint
    if (err instanceof UserError)
      throw new UserError(`${node.id}: ${err.message}`, {
        hint: err.hint,
        exitCode: err.exitCode,
        cause: err,
      });
    throw new UserError(`${node.id}: ${(err as Error).message}`, {
      hint: "check host, port, user and keyFile in the inventory",
    });
  }
}

export type NodeAction = "start" | "stop" | "restart" | "logs" | "status";

const NODE_ACTION_DOING: Record<NodeAction, string> = {
  start: "starting",
  stop: "stopping",
  restart: "restarting",
  logs: "reading the log of",
  status: "reporting the status of",
};

/**
 * The first line of a node's CUTOVER_MARKER, at most 256 bytes of it (NULs dropped) whatever the
 * file holds: "cutover=<line>" when the marker is there (the regular file the probe looks for,
 * so that what deploy repairs and what node start refuses are the same), nothing otherwise.
 */
const READ_CUTOVER_SCRIPT = `if [ -f "$1/.cutover" ]; then
  printf 'cutover='; head -c 256 "$1/.cutover" 2>/dev/null | head -n 1 | tr -d '\\000'; echo
fi
`;

/** A CUTOVER_MARKER found on a node: the release names it holds, "" for one that is not a release name. */
export interface CutoverMarker {
  from: string;
  to: string;
}

/** Reads the CUTOVER_MARKER on a node; undefined when there is none. Never throws on what the file holds. */
async function readCutoverMarker(exec: Executor, dataDir: string): Promise<CutoverMarker | undefined> {
  const out = (
    await run(exec, "reading the cut-over marker", ["sh", "-c", READ_CUTOVER_SCRIPT, "sh", dataDir])
  ).stdout;
  const line = out.split("\n").find((l) => l.startsWith("cutover="));
  if (line === undefined) return undefined;
  // "<from> <to>", as stopOldTask writes it: split on the one space, not trimmed (from is "" when the
  // node could not hash the release it ran)
  const [from = "", to = ""] = line.slice("cutover=".length).split(" ");
  const name = (s: string) => (SHA256_HEX.test(s) ? s : "");
  return { from: name(from), to: name(to) };
}

/**
 * What an interrupted cut-over on a node means for `node start|restart`: the node may run no
 * agent, and its files may be a mix of two releases (the swap is not atomic); what to run instead.
 */
function interruptedCutover(node: InventoryNode, m: CutoverMarker): { message: string; hint: string } {
  const marker = `${node.dataDir}/${CUTOVER_MARKER}`;
  // garbage in the marker is not echoed: it says a cut-over began, not between what
  const which =
    m.from && m.to
      ? `the cut-over from release ${short(m.from)} to release ${short(m.to)} on ${node.id}`
      : `a cut-over on ${node.id} (its marker ${marker} does not name both releases)`;
  return {
    message: `a deploy was interrupted during ${which}: the files in ${node.dataDir} may be a mix of both releases`,
    hint:
      `run the same \`shardctl deploy\` again: it finishes the cut-over, or repairs the node back to the release it ran before it${m.from ? ` (${short(m.from)})` : ""} (\`--nodes ${node.id}\` for this node only; \`deploy --rollback\` too repairs it first, then goes back one release more); ` +
      `if a deploy is still running, wait for it. (The marker is ${marker}.)`,
  };
}

export async function runNodeControl(
  action: NodeAction,
  node: InventoryNode,
  opts: { hostKeys: HostKeyOptions; lines?: number; healthTimeoutMs?: number },
  deps: { connect?: ConnectNode; log?: (m: string) => void },
): Promise<{ node: string; action: NodeAction; output: string; cutover?: CutoverMarker }> {
  const log = deps.log ?? (() => {});
  const exec = await connectOrExplain(node, opts.hostKeys, deps.connect ?? connectNode, log);
  try {
    const ctl = `${node.dataDir}/ctl.sh`;
    if ((await exec.exec(["test", "-f", ctl])).code !== 0) {
      throw new UserError(`no agent is deployed on ${node.id} (${ctl} does not exist on ${node.host})`, {
        hint: `run \`shardctl deploy --nodes ${node.id}\``,
      });
    }
    await refuseOtherNodesInstall(exec, node, NODE_ACTION_DOING[action]);
    // ctl.sh start would start whatever an interrupted cut-over left in place; deploy knows how to
    // repair that. A stop is always safe, and status and logs only look.
    const cutover =
      action === "start" || action === "restart" || action === "status"
        ? await readCutoverMarker(exec, node.dataDir)
        : undefined;
    if (cutover && action !== "status") {
      const { message, hint } = interruptedCutover(node, cutover);
      const doing = action === "start" ? "starting" : "restarting";
      throw new PreconditionError(`not ${doing} ${node.id}: ${message}`, { hint });
    }
    const outputs: string[] = [];
    if (action === "stop" || action === "restart")
      outputs.push((await run(exec, "stop", ["sh", ctl, "stop", "30"], { timeoutMs: 60_000 })).stdout.trim());
    if (action === "start" || action === "restart") {
      outputs.push((await run(exec, "start", ["sh", ctl, "start"])).stdout.trim());
      const probe = parseProbe(
        (await run(exec, "the platform probe", ["sh", "-c", PROBE_SCRIPT, "sh", node.dataDir])).stdout,
      );
      const ctx = { node, exec, facts: probe } as unknown as NodeContext;
      await waitHealthy(ctx, opts.healthTimeoutMs ?? 30_000);
      outputs.push("healthy");
    }
    if (action === "logs") {
      const lines = opts.lines ?? 100;
      outputs.push((await run(exec, "reading the log", ["sh", ctl, "logs", String(lines)])).stdout);
    }
    if (action === "status") {
      const r = await exec.exec(["sh", ctl, "status"]);
      outputs.push(r.stdout.trim());
      if (cutover) {
        const { message } = interruptedCutover(node, cutover);
        outputs.push(
          `${message}; \`node start\` refuses until \`shardctl deploy\` (run again, or with --rollback) repairs it`,
        );
      }
    }
    return { node: node.id, action, output: outputs.join("\n"), ...(cutover ? { cutover } : {}) };
  } finally {
    await exec.close();
  }
}

/** Any C0 control character (newline, tab, NUL, ...) or DEL. */
function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}
