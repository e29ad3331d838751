/**
 * `shardctl node start|stop|restart|status|logs NODE`: controls a deployed
 * agent over SSH. (`shardctl agent` is the agent process itself, and
 * `shardctl nodes` lists the nodes; this is the remote control.)
 */
import type { Command } from "commander";
import { runNodeControl, type NodeAction } from "../cluster/deploy.js";
import { selectNodes } from "../cluster/inventory.js";
import { printJson } from "../output.js";
import { parsePositiveInt } from "./common.js";
import type { CommandContext, RegisterCommand } from "./context.js";
import {
  DEFAULT_INVENTORY,
  hostKeysFor,
  inventoryFor,
  withDeployLock,
  type SshCommandOptions,
} from "./deploy.js";

interface NodeCommandOptions extends SshCommandOptions {
  lines?: string;
  json?: boolean;
}

export async function runNodeCommand(
  action: NodeAction,
  nodeId: string,
  opts: NodeCommandOptions,
  ctx: CommandContext,
): Promise<void> {
  const config = ctx.config();
  const [node] = selectNodes(inventoryFor(opts, config, ctx.env), [nodeId], "the node given names");
  const lines = opts.lines === undefined ? undefined : parsePositiveInt(opts.lines, "--lines");
  const hostKeys = hostKeysFor(opts, ctx.env);
  const log = (m: string) => ctx.io.err.write(m + "\n");
  const control = () => runNodeControl(action, node, { hostKeys, lines }, { log });
  // what changes a node's agent takes the deploy lock, as deploy does; status and logs only look
  const r =
    action === "status" || action === "logs"
      ? await control()
      : await withDeployLock(config, ctx, `node-${action}`, node.id, control);
  if (opts.json) printJson(ctx.io, r);
  else if (action === "logs")
    ctx.io.out.write(r.output.endsWith("\n") || r.output === "" ? r.output : r.output + "\n");
  else ctx.io.err.write(`${r.node}: ${r.output.split("\n").join("; ")}\n`);
}

export const registerNodeControl: RegisterCommand = (program: Command, ctx: CommandContext) => {
  const node = program
    .command("node")
    .description("control a deployed agent over SSH: start, stop, restart, status, logs")
    .addHelpText("after", NODE_HELP);
  const actions: [NodeAction, string][] = [
    ["start", "start the node's agent and wait for its /health"],
    ["stop", "stop the node's agent (SIGTERM: writes in flight finish; SIGKILL after 30 s)"],
    ["restart", "stop, then start and wait for /health"],
    ["status", "say whether the node's agent runs"],
    ["logs", "print the end of the agent's log (journalctl under systemd)"],
  ];
  for (const [action, description] of actions) {
    const sub = node
      .command(action)
      .description(description)
      .argument("<node>", "node id from the inventory")
      .option(
        "-i, --inventory <file>",
        `the inventory (default: SHARDCTL_INVENTORY or ./${DEFAULT_INVENTORY})`,
      )
      .option("--known-hosts <file>", "the known_hosts file (default: ~/.ssh/known_hosts)")
      .option("--accept-new-host-keys", "trust the host key of a host not yet in known_hosts")
      .option("--json", "print the result as JSON");
    if (action === "logs") sub.option("-n, --lines <n>", "how many lines", "100");
    sub.addHelpText(
      "after",
      `\nExamples:\n  $ shardctl node ${action} n2 --inventory cluster.yaml${action === "logs" ? "\n  $ shardctl node logs n2 -i cluster.yaml --lines 20" : ""}\n  $ shardctl node ${action} n2 -i cluster.yaml --json`,
    );
    sub.action(async (nodeId: string, opts: NodeCommandOptions) => runNodeCommand(action, nodeId, opts, ctx));
    sub.exitOverride();
  }
};

const NODE_HELP = `
The node is looked up in the inventory and reached over SSH like deploy does
(host keys checked); the agent is controlled by the ctl.sh script deploy wrote
into its dataDir.

start and restart refuse (exit 3, nothing changed) a node where a deploy was
interrupted during a cut-over (its dataDir holds .cutover): its files may be a
mix of two releases. Run the same \`shardctl deploy\` again, or
\`shardctl deploy --rollback\`: both repair the node first. stop is not
refused for it, and status says when a cut-over was interrupted.

start, stop and restart take the cluster's deploy lock, as deploy does (see
\`shardctl deploy --help\`): while a deploy, deploy --rollback, undeploy or
another node command holds it they are refused (exit 3, nothing changed),
naming the holder. status and logs do not take it.

Examples:
  $ shardctl node restart n2 -i cluster.yaml
  $ shardctl node logs n2 -i cluster.yaml --lines 50
  $ shardctl node stop n2 -i cluster.yaml && shardctl node start n2 -i cluster.yaml`;
