/** Starts real agent processes for the integration tests (node + tsx + bin/shardctl.ts). */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { Agent as HttpAgent, request } from "node:http";

/** Keep-alive connections for tests that send many requests to one agent. */
export const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 32 });
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { startAgent as startInProcess, type Agent, type AgentOptions } from "../../../src/agent/agent.js";
import { DEFAULT_LEVELS } from "../../../src/engine/access-windows.js";
import { defaultConfig, type Config } from "../../../src/config.js";
import type { LocationMap, SegmentRange } from "../../../src/engine/location-map.js";
import { freePort, freePortRange } from "../../helpers/ports.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "../../..");
export const TOKEN = "test-token-0123456789";

export { freePort, freePortRange };

/**
 * The first map a test writes into its store: `shards` as [id, node, range], each at epoch 1 and
 * never moved, over `segmentCount` segments and `nodes`.
 */
export function startingMap(
  segmentCount: number,
  nodes: LocationMap["nodes"],
  shards: readonly (readonly [string, string, SegmentRange])[],
  nextShardSeq: number,
): LocationMap {
  return {
    format: 1,
    segmentCount,
    nodes,
    shards: shards.map(([id, node, range]) => ({
      id,
      node,
      epoch: 1,
      migrationTimestamp: 0,
      changedAt: 0,
      ranges: [range],
    })),
    nextShardSeq,
    term: 0,
    updatedAt: Date.now(),
  };
}

/** The CLI's config for agents started here: `segments` segments, zones a, b, c, their token. */
export function agentsConfig(dataDir: string, segments: number): Config {
  const d = defaultConfig();
  return { ...d, segments, zones: ["a", "b", "c"], dataDir, agent: { ...d.agent, token: TOKEN } };
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `shardctl-${prefix}-`));
}

/** The command line that runs shardctl from the source tree. */
export function cliArgs(): string[] {
  return [
    "--import",
    pathToFileURL(join(root, "node_modules/tsx/dist/loader.mjs")).href,
    join(root, "bin/shardctl.ts"),
  ];
}

export interface AgentProc {
  child: ChildProcess;
  port: number;
  address: string;
  dataDir: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

export interface StartOptions {
  dataDir: string;
  port?: number;
  nodeId?: string;
  zone?: string;
  segments?: number;
  /** The configured zones (SHARDCTL_ZONES); default a,b,c. */
  zones?: string;
  configFile?: string;
  extra?: string[];
  /** Node's own flags, before the program (e.g. an --import that sets the process's clock). */
  nodeArgs?: string[];
  /** The agent's limit on open files (started through util-linux's prlimit). */
  openFiles?: number;
}

export async function startAgent(o: StartOptions): Promise<AgentProc> {
  const port = o.port ?? (await freePort());
  mkdirSync(join(o.dataDir, ".."), { recursive: true });
  const tokenFile = join(o.dataDir, "..", `token-${port}`);
  writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
  const env: NodeJS.ProcessEnv = { ...process.env, SHARDCTL_ZONES: o.zones ?? "a,b,c" };
  delete env.SHARDCTL_TOKEN;
  if (o.configFile) env.SHARDCTL_CONFIG = o.configFile;
  const program = [
    process.execPath,
    ...[
      ...(o.nodeArgs ?? []),
      ...cliArgs(),
      "--data-dir",
      o.dataDir,
      "agent",
      "--listen",
      `127.0.0.1:${port}`,
      "--zone",
      o.zone ?? "a",
      "--node-id",
      o.nodeId ?? "node-1",
      "--token-file",
      tokenFile,
      "--segments",
      String(o.segments ?? 64),
      ...(o.extra ?? []),
    ],
  ];
  // (prlimit runs the program in its own process: the pid is the agent's)
  if (o.openFiles !== undefined) program.unshift("prlimit", `--nofile=${o.openFiles}:${o.openFiles}`, "--");
  const child = spawn(program[0], program.slice(1), {
    stdio: ["ignore", "ignore", "pipe"],
    env,
    cwd: tmpdir(),
  });
  let err = "";
  child.stderr!.on("data", (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const proc: AgentProc = {
    child,
    port,
    address: `127.0.0.1:${port}`,
    dataDir: o.dataDir,
    stderr: () => err,
    exited,
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`agent exited with ${child.exitCode}: ${err}`);
    if ((await http(port, "GET", "/health").catch(() => undefined))?.status === 200) return proc;
    if (Date.now() > deadline) throw new Error(`agent did not become healthy: ${err}`);
    await sleep(50);
  }
}

export async function stopAgent(p: AgentProc, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.exited;
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json: () => Record<string, unknown>;
}

export function http(
  port: number,
  method: string,
  path: string,
  opts: {
    body?: Buffer | string;
    headers?: Record<string, string>;
    token?: string | null;
    pool?: HttpAgent;
    /** Fails the request when no answer came within this time. */
    timeoutMs?: number;
  } = {},
): Promise<HttpResult> {
  const headers: Record<string, string | number> = { ...opts.headers };
  if (opts.token !== null) headers.authorization = `Bearer ${opts.token ?? TOKEN}`;
  if (opts.body !== undefined) headers["content-length"] = Buffer.byteLength(opts.body);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, method, path, headers, agent: opts.pool ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            json: () => JSON.parse(body.toString()),
          });
        });
      },
    );
    req.on("error", reject);
    if (opts.timeoutMs !== undefined)
      req.setTimeout(opts.timeoutMs, () =>
        req.destroy(new Error(`${method} ${path}: no answer within ${opts.timeoutMs} ms`)),
      );
    req.end(opts.body);
  });
}

export function put(
  port: number,
  shard: string,
  key: string,
  value: string | Buffer,
  epoch = 1,
  extra: Record<string, string> = {},
  pool?: HttpAgent,
) {
  return http(port, "PUT", `/v1/shards/${shard}/keys/${encodeURIComponent(key)}`, {
    body: value,
    headers: { "x-shard-epoch": String(epoch), ...extra },
    pool,
  });
}

export function get(port: number, shard: string, key: string, epoch = 1, extra: Record<string, string> = {}) {
  return http(port, "GET", `/v1/shards/${shard}/keys/${encodeURIComponent(key)}`, {
    headers: { "x-shard-epoch": String(epoch), ...extra },
  });
}

export function admin(port: number, method: string, path: string, body: unknown) {
  return http(port, method, `/v1/admin/shards/${path}`, {
    body: JSON.stringify(body),
    headers: { "content-type": "application/json" },
  });
}

/**
 * Sends raw bytes on a fresh connection (for requests node's client refuses to send) and collects what
 * comes back until the agent closes the connection, or `waitMs` passes (then `closed` is false).
 */
export function rawHttp(
  port: number,
  data: string | Buffer,
  waitMs = 1000,
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1", () => s.write(data));
    let text = "";
    s.on("data", (c: Buffer) => (text += c.toString("latin1")));
    s.once("error", reject);
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ text, closed: false });
    }, waitMs);
    s.once("close", () => {
      clearTimeout(timer);
      resolve({ text, closed: true });
    });
  });
}

/**
 * An in-process agent's options (startAgent from src/agent/agent.ts): node-a in zone a of zones
 * a and b, 64 segments, any free port on loopback, no periodic windows save; its log lines to `log`.
 */
export function inProcessAgentOptions(dataDir: string, log: (m: string) => void = () => {}): AgentOptions {
  return {
    dataDir,
    host: "127.0.0.1",
    port: 0,
    zone: "a",
    nodeId: "node-a",
    token: TOKEN,
    segments: 64,
    zones: ["a", "b"],
    levels: DEFAULT_LEVELS,
    maxKeyBytes: 1024,
    maxValueBytes: 1024 * 1024,
    windowsSaveMs: 0,
    log,
  };
}

/**
 * One in-process agent at a time on a data directory: each start stops the one before and keeps
 * the log lines of the new one only. A test file makes one and stops it after each test.
 */
export class InProcessAgent {
  agent?: Agent;
  port = 0;
  logs: string[] = [];

  async start(dataDir: string, loadMap?: () => Promise<LocationMap | null>): Promise<Agent> {
    await this.stop();
    this.logs = [];
    const s = await startInProcess(
      inProcessAgentOptions(dataDir, (m) => this.logs.push(m)),
      false,
      loadMap,
    );
    this.agent = s.agent;
    this.port = s.address.port;
    return s.agent;
  }

  async stop(): Promise<void> {
    await this.agent?.stop();
    this.agent = undefined;
  }
}
