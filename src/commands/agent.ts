/** `shardctl agent`: runs the node agent in the foreground (the local cluster and deploy start it). */
import type { Command } from "commander";
import { startAgent } from "../agent/agent.js";
import { NODE_ID_PATTERN, type LocationMap } from "../engine/location-map.js";
import type { Config } from "../config.js";
import { EmbeddedStore } from "../store/embedded.js";
import { openStore } from "../store/index.js";
import { UsageError } from "../errors.js";
import { readInputText } from "../input-file.js";
import { parsePositiveInt } from "../numbers.js";
import { checkAgentToken } from "../cluster/local.js";
import type { CommandContext, RegisterCommand } from "./context.js";

export interface AgentCommandOptions {
  /** Defaults to the global --data-dir (config dataDir). */
  dataDir?: string;
  listen: string;
  zone: string;
  nodeId: string;
  tokenFile?: string;
  listenBinary?: string;
  segments?: string;
  maxFileBytes?: string;
  snapshotBytes?: string;
  windowsSaveSeconds?: string;
  mapDir?: string;
}

export function parseListen(s: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535)
    throw new UsageError(`--listen must be HOST:PORT, got ${JSON.stringify(s)}`, {
      hint: "e.g. --listen 127.0.0.1:7401",
    });
  return { host: m[1].replace(/^\[(.*)\]$/, "$1"), port };
}

function positiveInt(v: string | undefined, flag: string): number | undefined {
  return v === undefined ? undefined : parsePositiveInt(v, flag);
}

/** --windows-save-seconds: 0 (only on a clean stop) to 86,400; default 60. */
function saveSeconds(v: string | undefined): number {
  if (v === undefined) return 60;
  const n = Number(v);
  if (!/^[0-9]+$/.test(v) || n > 86_400)
    throw new UsageError(
      `--windows-save-seconds must be a whole number from 0 to 86400, got ${JSON.stringify(v)}`,
      {
        hint: "0 saves the access windows only when the agent stops cleanly",
      },
    );
  return n;
}

/** A bearer token is a word: reading a token file stops past this. */
const MAX_TOKEN_FILE_BYTES = 64 * 1024;

export function readToken(tokenFile: string | undefined, configured: string | undefined): string {
  if (tokenFile) {
    // read with a bound: a token file that is /dev/zero or an endless pipe is refused, not read until memory runs out
    const t = readInputText(tokenFile, "the token file", MAX_TOKEN_FILE_BYTES, {
      tooLarge: () =>
        new UsageError(`the token file ${tokenFile} is larger than 64 KiB: it does not hold a bearer token`),
    }).trim();
    if (!t) throw new UsageError(`the token file ${tokenFile} is empty`);
    return checkAgentToken(t, `the token file ${tokenFile}`);
  }
  if (configured) return checkAgentToken(configured, "the agent token (agent.token or SHARDCTL_TOKEN)");
  throw new UsageError("the agent needs a bearer token", {
    hint: "pass --token-file F, set SHARDCTL_TOKEN, or set agent.token in the config",
  });
}

/**
 * Where the agent reads the location map at start (for shards in doubt):
 * --map-dir (an embedded store), else Consul when the store is configured
 * as Consul, else nowhere (in-doubt shards wait for a coordinator).
 */
function mapLoader(
  opts: AgentCommandOptions,
  config: Config,
): (() => Promise<LocationMap | null>) | undefined {
  if (opts.mapDir) {
    const dir = opts.mapDir;
    return async () => (await new EmbeddedStore(dir).load())?.map ?? null;
  }
  if (config.store !== "consul") return undefined;
  return async () => {
    const store = await openStore(config);
    try {
      return (await store.load({ consistent: true }))?.map ?? null;
    } finally {
      await store.close();
    }
  };
}

export async function runAgent(opts: AgentCommandOptions, ctx: CommandContext): Promise<void> {
  const config = ctx.config();
  const { host, port } = parseListen(opts.listen);
  if (!NODE_ID_PATTERN.test(opts.nodeId))
    throw new UsageError(`bad --node-id ${JSON.stringify(opts.nodeId)}`, {
      hint: `ids match ${NODE_ID_PATTERN.source}`,
    });
  if (!config.zones.includes(opts.zone)) {
    throw new UsageError(
      `--zone ${opts.zone} is not one of the configured zones (${config.zones.join(", ")})`,
      {
        hint: "set zones in the config or SHARDCTL_ZONES",
      },
    );
  }
  const token = readToken(opts.tokenFile, config.agent.token);
  const binary = opts.listenBinary ? parseListen(opts.listenBinary) : undefined;
  await startAgent(
    {
      dataDir: opts.dataDir ?? config.dataDir,
      host,
      port,
      zone: opts.zone,
      nodeId: opts.nodeId,
      token,
      binaryHost: binary?.host,
      binaryPort: binary?.port,
      segments: positiveInt(opts.segments, "--segments") ?? config.segments,
      zones: config.zones,
      levels: config.windows.levels,
      maxKeyBytes: config.limits.maxKeyBytes,
      maxValueBytes: config.limits.maxValueBytes,
      maxConnections: config.limits.maxConnections,
      headersTimeoutMs: config.agent.headersTimeoutSeconds * 1000,
      idleTimeoutMs: config.agent.idleTimeoutSeconds * 1000,
      keepAliveTimeoutMs: config.agent.keepAliveTimeoutSeconds * 1000,
      frameTimeoutMs: config.agent.frameTimeoutSeconds * 1000,
      maxFileBytes: positiveInt(opts.maxFileBytes, "--max-file-bytes"),
      snapshotBytes: positiveInt(opts.snapshotBytes, "--snapshot-bytes"),
      windowsSaveMs: saveSeconds(opts.windowsSaveSeconds) * 1000,
    },
    true,
    mapLoader(opts, config),
  );
  // runs until SIGTERM/SIGINT (the handler exits the process)
  await new Promise(() => {});
}

export const registerAgent: RegisterCommand = (program: Command, ctx: CommandContext) => {
  program
    .command("agent")
    .description(
      "run the node agent: hosts log shards, serves reads and writes, measures access (foreground)",
    )
    .requiredOption("--listen <host:port>", "address of the HTTP API")
    .requiredOption("--zone <zone>", "the zone this node is in (one of the configured zones)")
    .requiredOption("--node-id <id>", "this node's id in the location map")
    .option("--token-file <file>", "file holding the bearer token (else SHARDCTL_TOKEN or agent.token)")
    .option(
      "--listen-binary <host:port>",
      "also serve get/put/delete over the binary protocol here (docs/AGENT.md)",
    )
    .option("--segments <n>", "segment count (must match the location map; default: the config's segments)")
    .option("--max-file-bytes <n>", "seal a log file at this size (default 67108864)")
    .option("--snapshot-bytes <n>", "snapshot a shard after this many log bytes (default 268435456)")
    .option(
      "--windows-save-seconds <n>",
      "save the access windows to DATA-DIR/access-windows.bin this often, so a crash loses at most this much access history (0: only on a clean stop; default 60)",
    )
    .option(
      "--map-dir <dir>",
      "the embedded location map's data directory, read at start for shards a restart left mid-migration (default: the Consul store when configured)",
    )
    .addHelpText("after", AGENT_HELP)
    .action(async (opts: AgentCommandOptions) => runAgent(opts, ctx));
};

const AGENT_HELP = `
The shards' logs, snapshots and metadata live under the global --data-dir
(DATA-DIR/shards/<id>/). The agent recovers every shard under DATA-DIR/shards before it listens: a torn
tail is truncated at the last valid entry and the zeros a busy log writes ahead
of its end are trimmed (both logged on stderr); a shard with a corrupt entry in
the middle of its log is refused, never served. SIGTERM stops
it cleanly (writes in flight reach their fsync, then exit 0). The access
windows are saved every --windows-save-seconds and on a clean stop, and read
back at start.

\`up --local\` and \`deploy\` start the agent with Node.js's
--max-semi-space-size=2 (a small young generation: shorter collector pauses,
a lower p99; docs/AGENT.md, "Young generation"). Started by hand, give it
through NODE_OPTIONS, as in the first example.

Examples:
  # an agent on port 7401 in zone a, token from a file
  NODE_OPTIONS=--max-semi-space-size=2 shardctl agent --data-dir /var/lib/shardctl --listen 0.0.0.0:7401 --zone a --node-id node-1 --token-file /etc/shardctl/token

  # usually started for you:
  shardctl up --local --nodes 3 --zones a,b,c

See docs/AGENT.md for the log format and the HTTP API.`;
