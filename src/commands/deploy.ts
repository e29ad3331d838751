/**
 * `shardctl deploy` and `shardctl undeploy`: node agents over SSH, from an
 * inventory file (src/cluster/deploy.ts does the work; docs/DEPLOY.md).
 */
import { join, resolve } from "node:path";
import type { Writable } from "node:stream";
import type { Command } from "commander";
import { buildBundle, loadBundle, type Bundle } from "../cluster/bundle.js";
import {
  checkKeepReleases,
  DEFAULT_KEEP_RELEASES,
  DeployControl,
  INTERRUPTED_STEP,
  interruptBoundSeconds,
  MAX_KEEP_RELEASES,
  ROLLING_HALTED_STEP,
  runDeploy,
  runUndeploy,
  type DeployResult,
  type HostKeyOptions,
  type NodeReport,
  type ProgressEvent,
} from "../cluster/deploy.js";
import { loadInventory, selectNodes, type Inventory } from "../cluster/inventory.js";
import { checkAgentToken } from "../cluster/local.js";
import {
  acquireDeployLock,
  deployLockTtlS,
  type DeployLock,
  type LockingCommand,
} from "../cluster/deploy-lock.js";
import { defaultKnownHostsFile, readKnownHosts } from "../cluster/known-hosts.js";
import type { Config } from "../config.js";
import type { LocationStore } from "../engine/ports.js";
import { PreconditionError, UsageError, UserError } from "../errors.js";
import { failpoint } from "../failpoint.js";
import { printJson, printTable, type IO } from "../output.js";
import { openStore } from "../store/index.js";
import { parsePositiveInt, withStore } from "./common.js";
import type { CommandContext, RegisterCommand } from "./context.js";

export const DEFAULT_INVENTORY = "inventory.yaml";

export interface SshCommandOptions {
  inventory?: string;
  knownHosts?: string;
  acceptNewHostKeys?: boolean;
}

/** The longest --health-timeout: a day. */
export const MAX_HEALTH_TIMEOUT_S = 86_400;
/** The inventory (--inventory, SHARDCTL_INVENTORY, ./inventory.yaml), checked against the configured zones. */
export function inventoryFor(opts: SshCommandOptions, config: Config, env: NodeJS.ProcessEnv): Inventory {
  const file = opts.inventory ?? env.SHARDCTL_INVENTORY ?? DEFAULT_INVENTORY;
  return loadInventory(file, { zones: config.zones, haveAgent: Boolean(env.SSH_AUTH_SOCK) });
}

/** The host key options; the known_hosts file is read once here, so that a bad one is refused before any node is reached. */
export function hostKeysFor(opts: SshCommandOptions, env: NodeJS.ProcessEnv): HostKeyOptions {
  const knownHostsFile = resolve(
    opts.knownHosts ?? (env.HOME ? join(env.HOME, ".ssh/known_hosts") : defaultKnownHostsFile()),
  );
  readKnownHosts(knownHostsFile);
  return {
    knownHostsFile,
    acceptNew: Boolean(opts.acceptNewHostKeys),
    agentSocket: env.SSH_AUTH_SOCK,
  };
}

function tokenFor(config: Config): string {
  const token = config.agent.token;
  if (!token) {
    throw new PreconditionError("deploy needs the agents' bearer token, and none is configured", {
      hint: "set SHARDCTL_TOKEN (e.g. `export SHARDCTL_TOKEN=$(openssl rand -hex 32)`) or agent.token in the config; clients use the same token",
    });
  }
  return checkAgentToken(token, "the agent token (agent.token or SHARDCTL_TOKEN)");
}

/**
 * Per-node progress on stderr: on a terminal, one line per node redrawn in
 * place; otherwise one plain line per step (upload percentages are left out).
 */
export class DeployProgress {
  private readonly state = new Map<string, string>();
  private drawn = 0;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly err: Writable,
    ids: string[],
    private readonly tty = Boolean((err as Writable & { isTTY?: boolean }).isTTY),
  ) {
    for (const id of ids) this.state.set(id, "waiting");
    this.width = Math.max(4, ...ids.map((i) => i.length));
  }

  private readonly width: number;

  private finished = false;

  update(id: string, e: ProgressEvent): void {
    const line = e.final
      ? `${e.final === "failed" ? "FAILED" : e.final}${e.final === "failed" ? ` at ${e.step}` : ""}${e.detail ? `: ${e.detail}` : ""}`
      : `${e.step}${e.percent !== undefined ? ` ${e.percent}%` : ""}${e.detail ? ` (${e.detail})` : ""}`;
    this.state.set(id, line);
    if (!this.tty || this.finished) {
      if (e.percent === undefined || e.percent === 100) this.err.write(`${id.padEnd(this.width)}  ${line}\n`);
      return;
    }
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.render();
    }, 80);
  }

  private render(): void {
    let s = this.drawn ? `\x1b[${this.drawn}A` : "";
    for (const [id, line] of this.state) s += `\x1b[2K${id.padEnd(this.width)}  ${line}\n`;
    this.drawn = this.state.size;
    this.err.write(s);
  }

  /** Draws the final state once; anything written to stderr afterwards stays below it. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.tty) this.render();
  }
}

export interface DeployCommandOptions extends SshCommandOptions {
  nodes?: string;
  concurrency: string;
  bundle?: string;
  rollback?: boolean;
  keepReleases: string;
  healthTimeout: string;
  acceptEmptyShards?: boolean;
  json?: boolean;
}

/** The bundle given with --bundle (checked before anything is locked or touched), or one built here. */
export async function prepareBundle(given: Bundle | undefined, config: Config, io: IO): Promise<Bundle> {
  if (given) return given;
  io.err.write("building the agent bundle (esbuild)...\n");
  const b = await buildBundle(resolve(config.dataDir, "deploy", "agent.mjs"));
  io.err.write(`bundle ${b.path}: ${(b.bytes / 1024).toFixed(0)} KiB, sha256 ${b.sha256.slice(0, 16)}…\n`);
  return b;
}

export async function runDeployCommand(
  opts: DeployCommandOptions,
  ctx: CommandContext,
): Promise<DeployResult> {
  const config = ctx.config();
  const inventory = inventoryFor(opts, config, ctx.env);
  const names = opts.nodes
    ?.split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  // `--nodes "$LIST"` with an empty list must not mean every node of the inventory
  if (names && names.length === 0)
    throw new UsageError(`--nodes names no node (${JSON.stringify(opts.nodes)})`, {
      hint: "give node ids from the inventory, comma-separated, or leave --nodes out to deploy every node",
    });
  const nodes = selectNodes(inventory, names);
  const concurrency = parsePositiveInt(opts.concurrency, "--concurrency");
  const healthTimeoutS = parsePositiveInt(opts.healthTimeout, "--health-timeout");
  // a day is more than any agent needs; beyond ~24.8 days Node fires the interrupt's timer at once
  if (healthTimeoutS > MAX_HEALTH_TIMEOUT_S)
    throw new UsageError(
      `--health-timeout must be at most ${MAX_HEALTH_TIMEOUT_S} seconds (a day), got ${healthTimeoutS}`,
    );
  const healthTimeoutMs = healthTimeoutS * 1000;
  const keepReleases = checkKeepReleases(opts.keepReleases, "--keep-releases");
  if (opts.rollback && opts.bundle !== undefined)
    throw new UsageError("--rollback installs a release kept on each node: it takes no --bundle", {
      hint: "leave --bundle out to go back to the release each node ran before, or --rollback out to ship the bundle",
    });
  // a --bundle that is missing, a directory, a device or far too large is refused here, before the lock
  const givenBundle = opts.bundle !== undefined ? loadBundle(opts.bundle) : undefined;
  const hostKeys = hostKeysFor(opts, ctx.env);
  const token = tokenFor(config);
  const lockTtlS = deployLockTtlS(ctx.env);
  const progress = new DeployProgress(
    ctx.io.err,
    nodes.map((n) => n.id),
  );
  const control = new DeployControl();
  let lock: DeployLock | undefined;
  const stopInterrupts = handleInterrupts(
    control,
    interruptBoundSeconds(healthTimeoutMs),
    ctx.io.err,
    () => progress.finish(),
    () => lock?.release() ?? Promise.resolve(),
  );
  const note = (m: string) => {
    progress.finish(); // notes go below the progress block
    ctx.io.err.write(m + "\n");
  };
  const result = await withStore(
    () => openStore(config),
    async (store) => {
      // before the bundle is built (into the data directory) and before any node is touched
      lock = await acquireDeployLock(
        store,
        opts.rollback ? "rollback" : "deploy",
        nodes.map((n) => n.id),
        { ttlS: lockTtlS, log: note },
      );
      // a deployer that can no longer count on its lock stops as on SIGTERM: the node being cut
      // over is finished, nothing new starts (another deploy may have the lock by now)
      const onLockLost = () => control.interrupt("the deploy lock was lost");
      lock.lost.addEventListener("abort", onLockLost, { once: true });
      try {
        await failpoint("deploy.locked");
        const bundle = opts.rollback ? undefined : await prepareBundle(givenBundle, config, ctx.io);
        return await runDeploy(
          {
            nodes,
            bundle,
            rollback: Boolean(opts.rollback),
            keepReleases,
            token,
            zones: config.zones,
            segments: config.segments,
            ...(config.store === "consul"
              ? {
                  consul: {
                    addr: config.consul.addr,
                    prefix: config.consul.prefix,
                    token: config.consul.token,
                  },
                }
              : {}),
            concurrency,
            healthTimeoutMs,
            hostKeys,
            acceptEmptyShards: Boolean(opts.acceptEmptyShards),
          },
          { store, control, progress: (id, e) => progress.update(id, e), log: note },
        );
      } finally {
        lock.lost.removeEventListener("abort", onLockLost);
        await lock.release();
      }
    },
  ).finally(() => {
    stopInterrupts();
    progress.finish();
  });
  if (opts.json) printJson(ctx.io, result);
  else {
    printTable(
      ctx.io,
      ["node", "host", "zone", "outcome", "mode", "time", "down"],
      result.nodes.map((r) => [
        r.id,
        r.host,
        r.zone,
        r.outcome,
        r.mode ?? "-",
        `${(r.durationMs / 1000).toFixed(1)} s`,
        r.downtimeMs === undefined ? "-" : `${(r.downtimeMs / 1000).toFixed(1)} s`,
      ]),
    );
  }
  for (const r of result.nodes) if (r.repaired) ctx.io.err.write(`${r.id}: ${r.repaired}\n`);
  const failed = result.nodes.filter((r) => r.outcome === "failed");
  for (const r of failed) reportFailure(ctx.io, r);
  if (result.interrupted) {
    const done = result.nodes.filter((r) => r.outcome !== "failed").map((r) => r.id);
    throw new UserError(
      `deploy interrupted (${result.interrupted}): ${done.length ? `${done.join(", ")} done` : "no node done"}, ` +
        `${failed.length} node(s) not (see above)`,
      {
        hint: "run the same deploy again: it carries on with the nodes that are not up to date yet",
      },
    );
  }
  if (failed.length) {
    throw new UserError(
      `${failed.length} of ${result.nodes.length} node(s) failed: ${failed.map((r) => r.id).join(", ")}${failed.length < result.nodes.length ? "; the others completed" : ""}`,
      {
        hint: "fix the problems above and run the same deploy again: nodes already up to date are left alone",
      },
    );
  }
  return result;
}

/** What a failure at a step left on the node, where the error does not say it already. */
function leftBehind(step: string | undefined): string | undefined {
  switch (step) {
    case "connect":
    case "check platform":
    case "check disk space":
    case "find the previous release":
      return "nothing was changed there";
    case ROLLING_HALTED_STEP:
      return "its agent was not stopped: it runs the version it had (the staged files were removed)";
    case INTERRUPTED_STEP:
      return undefined; // the error says what the interruption left there
    case "repair interrupted cut-over":
      return "its agent is stopped; the next deploy tries the repair again";
    default:
      return "its steps were rolled back: no new agent is running there (a running one was restored)";
  }
}

function reportFailure(io: IO, r: NodeReport): void {
  io.err.write(`\n${r.id} (${r.host}) failed at "${r.step}": ${r.error}\n`);
  if (r.hint) io.err.write(`  hint: ${r.hint}\n`);
  const left = leftBehind(r.step);
  if (r.rollbackErrors?.length)
    io.err.write(`  rollback problems (check the node by hand): ${r.rollbackErrors.join("; ")}\n`);
  else if (left) io.err.write(`  ${left}\n`);
}

/**
 * SIGINT/SIGTERM/SIGHUP during a deploy, or its stderr closed (a write
 * failing: the session gone, a reader that quit). The first: the deploy stops starting new
 * work, and the node being cut over is carried to a running agent (its new
 * one, or its previous one back) — a process that died there would leave that
 * node with no agent at all — within `boundSeconds`. A second signal, or the
 * bound running out: exit at once, by the same signal, saying which node may
 * be left stopped and that the next deploy repairs it — after releasing the
 * deploy lock (`releaseLock`), or the next deploy would be refused until a
 * Consul session expires. Returns the function that removes the handlers.
 */
function handleInterrupts(
  control: DeployControl,
  boundSeconds: number,
  err: Writable,
  beforeWrite: () => void,
  releaseLock: () => Promise<void>,
): () => void {
  let deadline: NodeJS.Timeout | undefined;
  // SIGHUP: the operator's terminal or SSH session closed
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  // Nor may a closed stderr (the session gone, a reader that quit) end the process mid-cut-over
  // with exit 0 (bin/shardctl.ts exits on EPIPE): its handlers are set aside while the deploy runs,
  // and a failed write interrupts the deploy as a first signal does, without a word more.
  const errorHandlers = err.listeners("error") as ((e: unknown) => void)[];
  let outputGone = false;
  const onWriteError = () => {
    if (outputGone) return;
    outputGone = true;
    if (!control.interrupted) control.interrupt("its output was closed");
  };
  const say = (text: string) => {
    if (!outputGone) err.write(text);
  };
  const remove = () => {
    if (deadline) clearTimeout(deadline);
    for (const sig of signals) process.off(sig, onSignal);
    // once the output is gone, its write errors stay ignored: the command's exit status is the deploy's
    if (outputGone) return;
    err.off("error", onWriteError);
    for (const h of errorHandlers) if (!err.listeners("error").includes(h)) err.on("error", h);
  };
  const exitNow = (sig: NodeJS.Signals, why: string) => {
    const nodes = control.inCutover;
    say(
      `${why}: exiting now. ` +
        (nodes.length
          ? `${nodes.map((id) => `${id}: its agent may be left stopped`).join("; ")} — run the same \`shardctl deploy\` again: ` +
            "it finds a node whose cut-over was interrupted and starts the release it ran before (or keeps the new agent, if that one runs and answers)\n"
          : "No node was being cut over: every agent runs the version it had or the new one\n"),
    );
    remove();
    // ended by the signal, as a process without a handler would be
    void exitBySignal(sig, releaseLock);
  };
  function onSignal(sig: NodeJS.Signals) {
    if (control.interrupted) return exitNow(sig, `${sig} again`);
    control.interrupt(sig);
    if (!outputGone) beforeWrite();
    const nodes = control.inCutover;
    say(
      `\n${sig}: deploy interrupted: ` +
        (nodes.length
          ? `finishing the cut-over of ${nodes.join(", ")} — until its new agent answers, or its previous one is back — before exiting (at most ${boundSeconds} s); `
          : "no node is being cut over; ") +
        `the nodes not cut over yet are left as they were (their agent is not stopped). ${sig === "SIGINT" ? "Ctrl-C" : sig} again exits at once.\n`,
    );
    deadline = setTimeout(
      () => exitNow(sig, `the cut-over did not end within ${boundSeconds} s`),
      boundSeconds * 1000,
    );
  }
  for (const sig of signals) process.on(sig, onSignal);
  for (const h of errorHandlers) err.off("error", h);
  err.on("error", onWriteError);
  return remove;
}

/** How long an exit by signal waits for the deploy lock's release (a Consul that does not answer). */
const LOCK_RELEASE_ON_EXIT_MS = 3000;

/** Releases the deploy lock (within LOCK_RELEASE_ON_EXIT_MS), then ends the process by `sig`. */
async function exitBySignal(sig: NodeJS.Signals, releaseLock: () => Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    releaseLock().catch(() => undefined),
    new Promise((r) => (timer = setTimeout(r, LOCK_RELEASE_ON_EXIT_MS))),
  ]);
  clearTimeout(timer);
  process.kill(process.pid, sig);
}

/**
 * SIGINT/SIGTERM during an undeploy or a node start|stop|restart: it ends at
 * once, as it always did (what it did stays done; running it again finishes
 * the job), but releases the deploy lock first. Returns the function that removes the handlers.
 */
function releaseLockOnSignals(err: Writable, what: string, releaseLock: () => Promise<void>): () => void {
  const signals = ["SIGINT", "SIGTERM"] as const;
  const remove = () => {
    for (const sig of signals) process.off(sig, onSignal);
  };
  function onSignal(sig: NodeJS.Signals) {
    remove();
    err.write(`\n${sig}: ${what} interrupted: exiting; run the same command again to finish it\n`);
    void exitBySignal(sig, releaseLock);
  }
  for (const sig of signals) process.on(sig, onSignal);
  return remove;
}

/**
 * Runs `work` on the cluster's store holding its deploy lock (an undeploy, a node start|stop|restart):
 * released at the end, or on SIGINT/SIGTERM, which end the command at once as they always did.
 */
export async function withDeployLock<T>(
  config: Config,
  ctx: CommandContext,
  command: LockingCommand,
  nodeId: string,
  work: (store: LocationStore) => Promise<T>,
): Promise<T> {
  const ttlS = deployLockTtlS(ctx.env);
  let lock: DeployLock | undefined;
  const what = command === "undeploy" ? "undeploy" : `node ${command.slice("node-".length)}`;
  const stopSignals = releaseLockOnSignals(
    ctx.io.err,
    `${what} of ${nodeId}`,
    () => lock?.release() ?? Promise.resolve(),
  );
  try {
    return await withStore(
      () => openStore(config),
      async (store) => {
        lock = await acquireDeployLock(store, command, [nodeId], {
          ttlS,
          log: (m) => ctx.io.err.write(m + "\n"),
        });
        try {
          await failpoint("deploy.locked");
          return await work(store);
        } finally {
          await lock.release();
        }
      },
    );
  } finally {
    stopSignals();
  }
}

export async function runUndeployCommand(
  nodeId: string,
  opts: SshCommandOptions & { purge?: boolean; json?: boolean },
  ctx: CommandContext,
): Promise<void> {
  const config = ctx.config();
  const inventory = inventoryFor(opts, config, ctx.env);
  const [node] = selectNodes(inventory, [nodeId], "undeploy names");
  const hostKeys = hostKeysFor(opts, ctx.env);
  const log = (m: string) => ctx.io.err.write(m + "\n");
  const result = await withDeployLock(config, ctx, "undeploy", node.id, (store) =>
    runUndeploy({ node, hostKeys, purge: Boolean(opts.purge) }, { store, log }),
  );
  if (opts.json) printJson(ctx.io, result);
  else {
    ctx.io.err.write(
      `${result.node}: agent ${result.stopped}, its files removed${opts.purge ? " (data included)" : " (data/ and agent.log kept; --purge removes them)"}; ` +
        `${result.deregistered ? "removed from the location map" : "it was not in the location map"}\n`,
    );
  }
}

export const registerDeploy: RegisterCommand = (program: Command, ctx: CommandContext) => {
  program
    .command("deploy")
    .description("install or upgrade the node agents over SSH from an inventory file, and register them")
    .option("-i, --inventory <file>", `the inventory (default: SHARDCTL_INVENTORY or ./${DEFAULT_INVENTORY})`)
    .option("--nodes <ids>", "only these nodes (comma-separated ids from the inventory)")
    .option(
      "--concurrency <n>",
      "nodes worked on at once (upgrades of running agents are always one at a time)",
      "5",
    )
    .option(
      "--accept-new-host-keys",
      "trust the host key of a host not yet in known_hosts, and add it (a CHANGED key is still refused)",
    )
    .option("--known-hosts <file>", "the known_hosts file (default: ~/.ssh/known_hosts)")
    .option("--bundle <file>", "ship this prebuilt agent bundle instead of building one from this checkout")
    .option(
      "--rollback",
      "instead of shipping a bundle, put back on each node the release it ran before (kept on the node), one node at a time",
    )
    .option(
      "--keep-releases <n>",
      `how many releases each node keeps for --rollback besides the one it runs (1-${MAX_KEEP_RELEASES}); older ones are deleted`,
      String(DEFAULT_KEEP_RELEASES),
    )
    .option(
      "--health-timeout <seconds>",
      `how long to wait for each agent's /health (1 to ${MAX_HEALTH_TIMEOUT_S})`,
      "30",
    )
    .option(
      "--accept-empty-shards",
      "register a freshly installed node even though the map gives it shards its agent does not hold, creating them empty (for a node whose data is lost for good; without it such a node is refused)",
    )
    .option("--json", "print the per-node result as JSON (progress stays on stderr)")
    .addHelpText("after", DEPLOY_HELP)
    .action(async (opts: DeployCommandOptions) => {
      await runDeployCommand(opts, ctx);
    });
  program
    .command("undeploy")
    .description(
      "stop and remove a node's agent and take the node out of the location map (refused while it owns shards)",
    )
    .argument("<node>", "node id from the inventory")
    .option("-i, --inventory <file>", `the inventory (default: SHARDCTL_INVENTORY or ./${DEFAULT_INVENTORY})`)
    .option("--known-hosts <file>", "the known_hosts file (default: ~/.ssh/known_hosts)")
    .option("--accept-new-host-keys", "trust the host key of a host not yet in known_hosts")
    .option("--purge", "also delete the node's data directory (its shard logs) and agent log")
    .option("--json", "print the result as JSON")
    .addHelpText("after", UNDEPLOY_HELP)
    .action(async (nodeId: string, opts: SshCommandOptions & { purge?: boolean; json?: boolean }) => {
      await runUndeployCommand(nodeId, opts, ctx);
    });
};

const DEPLOY_HELP = `
For each node (in parallel, --concurrency at a time): connect over SSH (the
host key must match known_hosts or the inventory's hostKey), check Node.js >= 20
and the free disk space, upload the agent bundle over SFTP and verify its
sha256 on the node, write its config and token (mode 0600), start it as a
systemd unit (where systemd runs and the user is root) or as a supervised
background process with a pid file, wait for its /health, then register the
healthy nodes in the location map (and as Consul services with --store consul).
With --store consul each agent also gets the store (the inventory's consulAddr,
else consul.addr; the Consul token in a 0600 file), to read the outcome of a
migration a crash interrupted.
Without a map yet, the initial layout is written over the deployed nodes.

Re-running is idempotent: a node whose bundle and config are unchanged and whose
agent runs is "up-to-date". A changed bundle is a rolling upgrade: one node at a
time is stopped (SIGTERM: it finishes the writes in flight), replaced, started and
checked healthy before the next. A node that fails is rolled back (a fresh node
keeps no agent; an upgraded node gets its previous version back) and reported;
the other nodes complete — except that the first failed upgrade of a running
agent stops the rolling upgrade: the nodes still waiting are not stopped, and
the report names the nodes already upgraded and how to roll them back. On a
first deploy (no map yet) the initial layout is only written once every node
of the run came up. The exit code is 1 if any node failed.

Each node keeps the releases it ran before (--keep-releases, default 2) in
<dataDir>/releases; --rollback puts the most recent of them back, one node at a
time like an upgrade, with no bundle from here.

Interrupting: on the first SIGINT (Ctrl-C) or SIGTERM, deploy starts nothing
new — nodes not cut over yet keep their agent untouched — and finishes the
node being cut over (its new agent answering, or its previous one back) before
exiting 1, within a bound it prints. A second signal exits at once: that node
may then be left with its agent stopped, as after a kill -9, a crash or a lost
connection that could not be re-opened. The next deploy finds such a node (the
<dataDir>/.cutover marker) and repairs it first: it keeps a new agent that runs
and answers, else puts back the release it ran and starts it.

One at a time: deploy, deploy --rollback and undeploy take the cluster's deploy
lock before touching any node, and release it when they end (also on failure,
SIGINT or SIGTERM). While another holds it they are refused with exit 3, naming
the holder (host, pid, command, nodes, since when): wait for it to end. The lock
is <dataDir>/deploy.lock with the embedded store (a dead holder's lock on this
host is taken over at once), or the key <prefix>deploy-lock held by a Consul
session with --store consul: a killed holder's lock goes when its session
expires, within twice its TTL (SHARDCTL_DEPLOY_LOCK_TTL, default 15 s).

The bearer token comes from SHARDCTL_TOKEN or agent.token in the config.

Examples:
  $ export SHARDCTL_TOKEN=$(openssl rand -hex 32)
  $ shardctl deploy --inventory cluster.yaml
  $ shardctl deploy -i cluster.yaml --nodes n1,n2 --accept-new-host-keys
  $ shardctl deploy -i cluster.yaml --rollback --nodes n1     # back to n1's previous release
  $ shardctl deploy -i cluster.yaml --json | jq -r '.nodes[] | select(.outcome=="failed") | .id'

See docs/DEPLOY.md for the inventory format.`;

const UNDEPLOY_HELP = `
Refused (exit 3) while the location map still gives the node shards: move them
away first (\`shardctl plan --all\`, then \`shardctl migrate\`), and while a
deploy, deploy --rollback or another undeploy holds the cluster's deploy lock
(see \`shardctl deploy --help\`). Otherwise stops the agent (SIGTERM, SIGKILL
after 30 s), removes its files (kept releases included) and its systemd unit,
and removes the node from the map (and its Consul service).

Examples:
  $ shardctl undeploy n3 --inventory cluster.yaml
  $ shardctl undeploy n3 -i cluster.yaml --purge     # the shard data too`;
