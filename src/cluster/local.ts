/**
 * The local cluster: N agents as detached processes on this machine, for
 * trying shardctl without any remote node. Everything lives under
 * <dataDir>/local/:
 *
 *   token                 the bearer token (0600), shared by agents and clients
 *   cluster.json          the nodes (id, address, zone)
 *   <node>/agent.pid      pid of the running agent
 *   <node>/agent.log      its stderr/stdout
 *   <node>/data/          its shards
 *
 * `up` is idempotent (agents already running are left alone) and writes the
 * initial layout into the location store unless a map exists; `down` sends
 * SIGTERM, waits, and SIGKILLs after a timeout.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Config } from "../config.js";
import { initialLayout, type NodeInfo } from "../engine/location-map.js";
import type { LocationStore } from "../engine/ports.js";
import { PreconditionError, UsageError, UserError } from "../errors.js";
import { writeAtomic } from "../store/embedded.js";
import { AgentRpc } from "./agent-rpc.js";

export interface LocalNode extends NodeInfo {
  pid?: number;
  running: boolean;
}

export interface LocalUpOptions {
  nodes: number;
  zones: string[];
  basePort: number;
  /** Seconds to wait for every agent's health. */
  waitSeconds?: number;
}

export interface LocalUpResult {
  nodes: LocalNode[];
  started: string[];
  alreadyUp: boolean;
  layoutWritten: boolean;
  /** Shards assigned on the agents (created or confirmed). */
  shardsAssigned: number;
  tokenFile: string;
  warnings: string[];
}

export function localDir(dataDir: string): string {
  return join(dataDir, "local");
}

export function localTokenPath(dataDir: string): string {
  return join(localDir(dataDir), "token");
}

/** The token a client uses: agent.token / SHARDCTL_TOKEN, else the local cluster's token file. */
export function resolveClientToken(config: Config): string {
  if (config.agent.token) return config.agent.token;
  const file = localTokenPath(config.dataDir);
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  throw new PreconditionError("no agent token is configured", {
    hint: "set SHARDCTL_TOKEN or agent.token, or start a local cluster with `shardctl up --local`",
  });
}

function ensureToken(dataDir: string): string {
  const file = localTokenPath(dataDir);
  if (!existsSync(file)) {
    mkdirSync(localDir(dataDir), { recursive: true, mode: 0o700 });
    writeFileSync(file, randomBytes(32).toString("hex") + "\n", { mode: 0o600, flag: "wx" });
  }
  chmodSync(file, 0o600);
  return file;
}

function pidFile(dataDir: string, node: string): string {
  return join(localDir(dataDir), node, "agent.pid");
}

/** The pid in a node's pid file if that process is alive and is a shardctl agent for this node. */
export function runningPid(dataDir: string, node: string): number | undefined {
  const file = pidFile(dataDir, node);
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  // a recycled pid must not be mistaken for our agent
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    if (!cmd.includes("agent") || !cmd.includes(node)) return undefined;
  } catch {
    // no /proc (not Linux): trust the pid file
  }
  return pid;
}

/** How to start `shardctl` as a child: the built JS, or the TS source through tsx. */
function cliCommand(): string[] {
  const here = fileURLToPath(import.meta.url);
  const root = resolve(dirname(here), "../..");
  if (here.endsWith(".ts")) {
    const loader = join(root, "node_modules/tsx/dist/loader.mjs");
    return [
      "--import",
      existsSync(loader) ? pathToFileURL(loader).href : "tsx",
      join(root, "bin/shardctl.ts"),
    ];
  }
  return [join(root, "bin/shardctl.js")];
}

export function planNodes(opts: LocalUpOptions): NodeInfo[] {
  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > 64)
    throw new UsageError("--nodes must be 1 to 64");
  if (opts.zones.length === 0) throw new UsageError("--zones needs at least one zone");
  if (!Number.isInteger(opts.basePort) || opts.basePort < 1024 || opts.basePort + opts.nodes > 65535) {
    throw new UsageError("--base-port must leave room for one port per node between 1024 and 65535");
  }
  return Array.from({ length: opts.nodes }, (_, i) => ({
    id: `node-${i + 1}`,
    address: `127.0.0.1:${opts.basePort + i}`,
    zone: opts.zones[i % opts.zones.length],
  }));
}

export async function localUp(
  config: Config,
  opts: LocalUpOptions,
  store: LocationStore,
  log: (msg: string) => void = () => {},
): Promise<LocalUpResult> {
  for (const z of opts.zones) {
    if (!config.zones.includes(z)) {
      throw new UsageError(`zone ${z} is not one of the configured zones (${config.zones.join(", ")})`, {
        hint: "set zones in the config or SHARDCTL_ZONES to include it",
      });
    }
  }
  const dataDir = resolve(config.dataDir);
  const clusterFile = join(localDir(dataDir), "cluster.json");
  let nodes: NodeInfo[];
  if (existsSync(clusterFile)) {
    // an existing local cluster keeps its nodes (the map refers to them)
    nodes = (JSON.parse(readFileSync(clusterFile, "utf8")) as { nodes: NodeInfo[] }).nodes;
  } else {
    nodes = planNodes(opts);
  }
  const tokenFile = ensureToken(dataDir);
  const token = readFileSync(tokenFile, "utf8").trim();
  mkdirSync(localDir(dataDir), { recursive: true, mode: 0o700 });
  writeAtomic(clusterFile, JSON.stringify({ nodes }, null, 2));
  const started: string[] = [];
  const warnings: string[] = [];
  const rpc = new AgentRpc({ token, timeoutMs: 5000 });
  try {
    for (const n of nodes) {
      if (runningPid(dataDir, n.id) !== undefined) continue;
      const dir = join(localDir(dataDir), n.id);
      mkdirSync(join(dir, "data"), { recursive: true, mode: 0o700 });
      const logFd = openSync(join(dir, "agent.log"), "a", 0o600);
      const child = spawn(
        process.execPath,
        [
          ...cliCommand(),
          "--data-dir",
          join(dir, "data"),
          "agent",
          "--listen",
          n.address,
          "--zone",
          n.zone,
          "--node-id",
          n.id,
          "--token-file",
          tokenFile,
          "--segments",
          String(config.segments),
          // a restarted agent asks the map about shards it left mid-migration
          ...(store.kind === "embedded" ? ["--map-dir", dataDir] : []),
        ],
        {
          detached: true,
          stdio: ["ignore", logFd, logFd],
          env: {
            ...process.env,
            SHARDCTL_ZONES: config.zones.join(","),
            SHARDCTL_SEGMENTS: String(config.segments),
          },
        },
      );
      closeSync(logFd);
      if (child.pid === undefined) throw new UserError(`could not start the agent for ${n.id}`);
      writeFileSync(pidFile(dataDir, n.id), String(child.pid) + "\n", { mode: 0o600 });
      child.unref();
      started.push(n.id);
      log(`started ${n.id} (zone ${n.zone}) on ${n.address}, pid ${child.pid}`);
    }
    const deadline = Date.now() + (opts.waitSeconds ?? 20) * 1000;
    for (const n of nodes) {
      while (!(await rpc.health(n.address))) {
        if (runningPid(dataDir, n.id) === undefined || Date.now() > deadline) {
          const logFile = join(localDir(dataDir), n.id, "agent.log");
          const tail = existsSync(logFile)
            ? readFileSync(logFile, "utf8").split("\n").slice(-8).join("\n")
            : "";
          throw new UserError(`the agent ${n.id} on ${n.address} did not become healthy:\n${tail}`, {
            hint: `see ${logFile}; a busy port needs another --base-port (after \`shardctl down\`)`,
          });
        }
        await sleep(100);
      }
    }
    // with Consul as the store, the agents are also services in its catalog, with a health check
    if (store.kind === "consul") {
      const { registerLocalAgentServices } = await import("../consul/local-services.js");
      await registerLocalAgentServices(config, nodes);
      log(`registered ${nodes.length} agent service(s) in Consul`);
    }
    // the layout: written once; an existing map is left as it is
    let layoutWritten = false;
    let vm = await store.load({ consistent: true });
    if (!vm) {
      const map = initialLayout(config.segments, nodes, { now: Date.now() });
      const cas = await store.compareAndSet(0, map);
      if (cas.ok) {
        layoutWritten = true;
        log(`wrote the initial layout: ${map.shards.length} shards over ${nodes.length} nodes`);
      }
      vm = await store.load({ consistent: true });
    }
    let shardsAssigned = 0;
    if (vm) {
      const byId = new Map(nodes.map((n) => [n.id, n]));
      for (const sh of vm.map.shards) {
        const node = byId.get(sh.node);
        const mapped = vm.map.nodes.find((x) => x.id === sh.node);
        if (!node || !mapped || mapped.address !== node.address) continue; // not one of ours
        const r = await rpc.assignShard(node.address, sh.id, {
          epoch: sh.epoch,
          ranges: sh.ranges,
          migrationTimestamp: sh.migrationTimestamp,
          segmentCount: vm.map.segmentCount,
        });
        if (r.status === 200 || r.status === 201) shardsAssigned++;
        else warnings.push(`${node.id} refused ${sh.id} at epoch ${sh.epoch}: ${JSON.stringify(r.body)}`);
      }
      if (shardsAssigned === 0)
        warnings.push("the location map names none of the local nodes; no shard was assigned");
    }
    const running = nodes.map((n) => ({
      ...n,
      pid: runningPid(dataDir, n.id),
      running: runningPid(dataDir, n.id) !== undefined,
    }));
    return {
      nodes: running,
      started,
      alreadyUp: started.length === 0,
      layoutWritten,
      shardsAssigned,
      tokenFile,
      warnings,
    };
  } finally {
    rpc.close();
  }
}

export interface LocalDownResult {
  stopped: string[];
  killed: string[];
  notRunning: string[];
}

export async function localDown(
  config: Config,
  timeoutMs = 10_000,
  log: (msg: string) => void = () => {},
): Promise<LocalDownResult> {
  const dataDir = resolve(config.dataDir);
  const clusterFile = join(localDir(dataDir), "cluster.json");
  const result: LocalDownResult = { stopped: [], killed: [], notRunning: [] };
  if (!existsSync(clusterFile)) return result;
  const nodes = (JSON.parse(readFileSync(clusterFile, "utf8")) as { nodes: NodeInfo[] }).nodes;
  if (config.store === "consul") {
    const { deregisterLocalAgentServices } = await import("../consul/local-services.js");
    const failed = await deregisterLocalAgentServices(config, nodes);
    for (const f of failed) log(`could not deregister ${f.node} from Consul: ${f.error}`);
  }
  const pids = new Map<string, number>();
  for (const n of nodes) {
    const pid = runningPid(dataDir, n.id);
    if (pid === undefined) {
      result.notRunning.push(n.id);
      rmSync(pidFile(dataDir, n.id), { force: true });
      continue;
    }
    process.kill(pid, "SIGTERM");
    pids.set(n.id, pid);
  }
  const deadline = Date.now() + timeoutMs;
  for (const [id, pid] of pids) {
    while (alive(pid) && Date.now() < deadline) await sleep(50);
    if (alive(pid)) {
      process.kill(pid, "SIGKILL");
      result.killed.push(id);
      log(`${id} (pid ${pid}) did not stop within ${timeoutMs} ms; killed`);
    } else {
      result.stopped.push(id);
      log(`stopped ${id} (pid ${pid})`);
    }
    rmSync(pidFile(dataDir, id), { force: true });
  }
  return result;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
