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
 *
 * `up` succeeds only when the cluster works: every port it is about to use
 * must be free before an agent is started, every agent must answer as itself
 * (its node id, behind this cluster's token) and stay alive, and at least one
 * shard must be assigned. Otherwise it fails (exit 1) and stops again the
 * agents it started, removing their pid files.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Config } from "../config.js";
import { nonPrintableAscii } from "../consul/address.js";
import { checkSegmentCount, initialLayout, NODE_ID_PATTERN, type NodeInfo } from "../engine/location-map.js";
import type { LocationStore } from "../engine/ports.js";
import { PreconditionError, UsageError, UserError } from "../errors.js";
import { readInputText } from "../input-file.js";
import { firstNonDirectory, makeDirs, sameFile } from "../fs-paths.js";
import {
  acquireFileLock,
  dataDirError,
  ensureDataDir,
  processAlive,
  writeAtomic,
} from "../store/embedded.js";
import { AgentRpc, splitAddress } from "./agent-rpc.js";
import { AGENT_NODE_FLAGS } from "../agent/node-flags.js";

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
  /** Which of nodes, zones and basePort the user gave (not defaults): compared with an existing cluster. */
  given?: { nodes?: boolean; zones?: boolean; basePort?: boolean };
  /**
   * The config file this command read (--config, SHARDCTL_CONFIG or found): the agents read it too,
   * with the store this command uses, so that their limits, timeouts and store are its own.
   */
  configFile?: string;
}

/**
 * What differs between the options the user gave and an existing local
 * cluster, whose nodes stay as they are (the map refers to them): an `up`
 * asked for another cluster would otherwise only start the old one.
 */
export function clusterMismatch(existing: readonly NodeInfo[], opts: LocalUpOptions): string[] {
  const given = opts.given ?? {};
  const out: string[] = [];
  if (given.nodes && opts.nodes !== existing.length)
    out.push(`--nodes ${opts.nodes} (it has ${existing.length})`);
  const firstPort = existing[0] ? splitAddress(existing[0].address).port : undefined;
  if (given.basePort && opts.basePort !== firstPort)
    out.push(`--base-port ${opts.basePort} (it starts at ${firstPort})`);
  if (given.zones && opts.zones.length > 0) {
    const dealt = existing.map((_, i) => opts.zones[i % opts.zones.length]);
    if (dealt.some((z, i) => z !== existing[i].zone))
      out.push(`--zones ${opts.zones.join(",")} (its nodes are in ${existing.map((n) => n.zone).join(",")})`);
  }
  return out;
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

/**
 * A bearer token goes into an HTTP header as it is: one word of printable
 * ASCII. Anything else (a pasted newline inside, a control character, a
 * non-ASCII letter) would fail every request as if the agents were down, so
 * it is refused where it is read, naming where it came from.
 */
export function checkAgentToken(token: string, source: string): string {
  if (token.length === 0) {
    throw new UsageError(`${source} is empty`, { hint: TOKEN_HINT });
  }
  if (/\s/.test(token)) {
    throw new UsageError(`${source} holds whitespace; an agent token is one word`, { hint: TOKEN_HINT });
  }
  const code = nonPrintableAscii(token);
  if (code !== undefined) {
    throw new UsageError(`${source} holds the character U+${code}; an agent token is printable ASCII`, {
      hint: TOKEN_HINT,
    });
  }
  return token;
}

const TOKEN_HINT = "use one word of printable ASCII, e.g. `openssl rand -hex 32`";

/** The token a client uses: agent.token / SHARDCTL_TOKEN, else the local cluster's token file. */
export function resolveClientToken(config: Config): string {
  if (config.agent.token !== undefined)
    return checkAgentToken(config.agent.token, "the agent token (agent.token or SHARDCTL_TOKEN)");
  const file = localTokenPath(config.dataDir);
  if (existsSync(file)) return readLocalToken(file);
  throw new PreconditionError("no agent token is configured", {
    hint: "set SHARDCTL_TOKEN or agent.token, or start a local cluster with `shardctl up --local`",
  });
}

/** The local token is 64 hex digits and a newline: reading stops past this (a token file that is /dev/zero). */
const MAX_LOCAL_TOKEN_BYTES = 64 * 1024;

/** The local cluster's token, read with a bound; a directory, a device or a bad token is a UsageError naming the file. */
function readLocalToken(file: string): string {
  let text: string;
  try {
    text = readInputText(file, "the token file", MAX_LOCAL_TOKEN_BYTES, {
      tooLarge: () =>
        new UsageError(
          `the token file ${file} is larger than 64 KiB: it does not hold the local cluster's token`,
        ),
    });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    throw new UsageError(err.message, {
      hint: "`shardctl up --local` writes this file (one word, mode 0600): move what is there away and run it again (clients may use SHARDCTL_TOKEN instead)",
      cause: err,
    });
  }
  return checkAgentToken(text.trim(), `the token file ${file}`);
}

/** The local token file, made if missing; its token is checked before its mode is set (not on a directory). */
function ensureToken(dataDir: string): { file: string; token: string } {
  const file = localTokenPath(dataDir);
  if (!existsSync(file)) {
    makeDir(localDir(dataDir));
    writeFileSync(file, randomBytes(32).toString("hex") + "\n", { mode: 0o600, flag: "wx" });
  }
  const token = readLocalToken(file);
  chmodSync(file, 0o600);
  return { file, token };
}

/** mkdir -p (mode 0700), with a clean error when part of the path is a file or cannot be written. */
function makeDir(dir: string): void {
  try {
    // not mkdirSync's recursive: it never returns for a path like /proc/self/x
    makeDirs(dir, 0o700);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOTDIR" || code === "EEXIST") {
      const blocker = firstNonDirectory(dir) ?? dir;
      throw new UsageError(`cannot create directory ${dir}: ${blocker} exists and is not a directory`, {
        hint: "pick another --data-dir, or move that file away",
        cause: err,
      });
    }
    if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
      throw new PreconditionError(`cannot create directory ${dir}: ${(err as Error).message}`, {
        hint: "pick a --data-dir this user can write to",
        cause: err,
      });
    }
    throw dataDirError(dir, err, "the directory");
  }
}

/** cluster.json lists at most 64 nodes in a few lines each: reading stops past this. */
const MAX_CLUSTER_FILE_BYTES = 1024 * 1024;

/**
 * The nodes in cluster.json, checked: a file that is damaged (not JSON, truncated), not a list of
 * nodes, a directory or a device is a PreconditionError naming it and saying what to do, before
 * anything is started, stopped or removed.
 */
function readClusterNodes(clusterFile: string): NodeInfo[] {
  const what = "the local cluster's node list";
  const refuse = (message: string, cause?: unknown) =>
    new PreconditionError(`${message}; nothing was changed`, {
      hint:
        `if no agent of this local cluster runs, remove ${clusterFile} (\`shardctl up --local\` writes it again); ` +
        `if some run (their pids are in ${dirname(clusterFile)}/<node>/agent.pid), stop them with kill first, ` +
        'or restore the file: {"nodes": [{"id": "node-1", "address": "127.0.0.1:7401", "zone": "a"}, ...]}',
      cause,
    });
  const damaged = (why: string, cause?: unknown) => refuse(`${what} ${clusterFile} ${why}`, cause);
  let text: string;
  try {
    text = readInputText(clusterFile, what, MAX_CLUSTER_FILE_BYTES, {
      tooLarge: () => damaged("is larger than 1 MiB: it is not one shardctl wrote"),
    });
  } catch (err) {
    // a directory, a file that cannot be opened: readInputText's message names it
    if (err instanceof UsageError) throw refuse(err.message, err);
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw damaged("is not valid JSON (damaged or truncated)", err);
  }
  const nodes = (parsed as { nodes?: unknown } | null)?.nodes;
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || !Array.isArray(nodes))
    throw damaged('does not hold {"nodes": [...]}');
  if (nodes.length === 0) throw damaged("lists no nodes");
  const ids = new Set<string>();
  nodes.forEach((n: unknown, i) => {
    const { id, address, zone } = (n ?? {}) as Partial<Record<keyof NodeInfo, unknown>>;
    const where = `nodes[${i}]`;
    if (typeof id !== "string" || !NODE_ID_PATTERN.test(id))
      throw damaged(`has no valid node id at ${where} (letters, digits, _ . - expected)`);
    if (ids.has(id)) throw damaged(`lists the node ${id} twice`);
    ids.add(id);
    let addressOk = typeof address === "string";
    try {
      if (addressOk) splitAddress(address as string);
    } catch {
      addressOk = false;
    }
    if (!addressOk) throw damaged(`has no valid address (HOST:PORT) for the node ${id} at ${where}`);
    if (typeof zone !== "string" || zone === "") throw damaged(`has no zone for the node ${id} at ${where}`);
  });
  return nodes as NodeInfo[];
}

/** How many times (100 ms apart) a busy port is tried again before it is reported in use. */
const PORT_RELEASE_TRIES = 30;

/** Whether this process can bind `address` now: undefined when it can, else the error code. */
function bindProblem(address: string): Promise<string | undefined> {
  const { host, port } = splitAddress(address);
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    srv.listen(port, host, () => srv.close(() => resolve(undefined)));
  });
}

/** The node id a shardctl agent on `address` gives in its unauthenticated /health, if one answers within 1 s. */
async function healthNodeId(address: string): Promise<string | undefined> {
  const rpc = new AgentRpc({ token: "", timeoutMs: 1000 });
  try {
    const r = await rpc.request(address, "GET", "/health", { auth: false });
    const body = JSON.parse(r.body.toString("utf8")) as { nodeId?: unknown };
    return r.status === 200 && typeof body.nodeId === "string" ? body.nodeId : undefined;
  } catch {
    return undefined;
  } finally {
    rpc.close();
  }
}

/** Bytes read from a log's end for its last lines: the log grows across the agent's restarts. */
const TAIL_BYTES = 64 * 1024;

/** The last lines of a log, from byte `from` on (at most its last TAIL_BYTES). */
export function logTail(file: string, lines = 8, from = 0): string {
  let fd: number | undefined;
  try {
    fd = openSync(file, "r");
    const size = fstatSync(fd).size;
    const start = Math.max(from, size - TAIL_BYTES);
    const buf = Buffer.alloc(Math.max(0, size - start));
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, start + got);
      if (n === 0) break;
      got += n;
    }
    let text = buf.subarray(0, got).toString("utf8");
    // (a cut first line is dropped, unless it is all there is)
    if (start > from && text.includes("\n")) text = text.slice(text.indexOf("\n") + 1);
    return text.trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function portOf(address: string): number {
  return splitAddress(address).port;
}

/** The `up --local` flags that plan exactly these nodes again. */
function upFlags(nodes: NodeInfo[]): string {
  return `--nodes ${nodes.length} --zones ${nodes.map((n) => n.zone).join(",")} --base-port ${portOf(nodes[0].address)}`;
}

function pidFile(dataDir: string, node: string): string {
  return join(localDir(dataDir), node, "agent.pid");
}

/** A pid file holds a number and a newline: reading stops past this. */
const MAX_PID_FILE_BYTES = 4096;

/** A pid file's text, read with a bound; a directory or a device there is a PreconditionError naming it. */
function readPidFile(file: string, node: string): string {
  try {
    return readInputText(file, "the pid file", MAX_PID_FILE_BYTES, {
      tooLarge: () => new UsageError(`the pid file ${file} is larger than 4 KiB: it holds no pid`),
    });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    throw new PreconditionError(`${err.message}; nothing was changed`, {
      hint: `if the agent ${node} does not run, remove ${file} (\`shardctl up --local\` writes it again)`,
      cause: err,
    });
  }
}

/** The pid in a node's pid file if that process is alive and is a shardctl agent for this node. */
export function runningPid(dataDir: string, node: string): number | undefined {
  const file = pidFile(dataDir, node);
  if (!existsSync(file)) return undefined;
  const pid = Number(readPidFile(file, node).trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  if (!processAlive(pid)) return undefined;
  // a recycled pid must not be mistaken for our agent: not even for a node of that name in another
  // local cluster (its data directory is another)
  let cmd: string[];
  try {
    cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return pid; // no /proc (not Linux): trust the pid file
  }
  const data = resolve(localDir(dataDir), node, "data");
  const at = cmd.indexOf("--data-dir");
  const given = at >= 0 ? cmd[at + 1] : undefined;
  if (!cmd.includes("agent") || !cmd.includes(node) || given === undefined || !sameDir(given, data))
    return undefined;
  return pid;
}

/**
 * Whether two paths name the same directory: the same path, or the same directory reached another
 * way (a symlink in either, as when the cluster was started through a link to its data directory).
 */
function sameDir(a: string, b: string): boolean {
  return resolve(a) === resolve(b) || sameFile(a, b);
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

/** A child this `up` started: its exit is watched, so an agent that dies at start is noticed. */
interface Started {
  node: NodeInfo;
  child: ChildProcess;
  /** Where this start's output begins in agent.log. */
  logOffset: number;
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  exited: Promise<void>;
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
  const release = await lockLocalCluster(resolve(config.dataDir));
  try {
    return await localUpLocked(config, opts, store, log);
  } finally {
    release();
  }
}

/** The file that makes `up --local` and `down` of one data directory run one at a time. */
const LOCAL_LOCK = "local-cluster.lock";
/** How long an `up` or `down` waits for another one on the same data directory. */
const LOCAL_LOCK_WAIT_MS = 120_000;

/**
 * Takes the local cluster's lock: two `up --local` at once both started agents on the same ports
 * and wrote the same pid files (the agents left running had none: `down` could not stop them, and
 * the next `up` took them for another cluster's).
 */
async function lockLocalCluster(dataDir: string): Promise<() => void> {
  ensureDataDir(dataDir);
  return acquireFileLock(join(dataDir, LOCAL_LOCK), "the local cluster", LOCAL_LOCK_WAIT_MS, {
    refusal: () =>
      new PreconditionError(
        `another \`shardctl up --local\` or \`down\` on ${dataDir} has not finished in ${LOCAL_LOCK_WAIT_MS / 1000} s; nothing was done`,
        { hint: "wait for it, then run the command again" },
      ),
  });
}

async function localUpLocked(
  config: Config,
  opts: LocalUpOptions,
  store: LocationStore,
  log: (msg: string) => void,
): Promise<LocalUpResult> {
  const dataDir = resolve(config.dataDir);
  const clusterFile = join(localDir(dataDir), "cluster.json");
  // an existing local cluster keeps its nodes (the map refers to them)
  const existing = existsSync(clusterFile);
  const nodes: NodeInfo[] = existing ? readClusterNodes(clusterFile) : planNodes(opts);
  const mismatch = existing ? clusterMismatch(nodes, opts) : [];
  if (mismatch.length > 0) {
    throw new PreconditionError(
      `the local cluster in ${dataDir} already exists with other settings: ${mismatch.join("; ")}; nothing was started`,
      {
        hint: "run `shardctl up --local` without those options to start it as it is, or use another --data-dir for another cluster",
      },
    );
  }
  // agents started with another segment count than the layout's would hash every key elsewhere
  const current = await store.load({ consistent: true });
  if (current) checkSegmentCount(current.map, config.segments);
  const { file: tokenFile, token } = ensureToken(dataDir);
  makeDir(localDir(dataDir));
  const rpc = new AgentRpc({ token, timeoutMs: 5000 });
  const started: Started[] = [];
  let layoutWritten = false;
  let consulRegistered = false;
  try {
    // every port an agent is about to take must be free now: a port answered by another
    // process would pass for a healthy agent, or make the new agent die at start
    const toStart = nodes.filter((n) => runningPid(dataDir, n.id) === undefined);
    for (const n of toStart) {
      let problem = await bindProblem(n.address);
      // an agent killed a moment ago may hold its port until the kernel has reaped it: wait a little
      for (let i = 0; problem === "EADDRINUSE" && i < PORT_RELEASE_TRIES; i++) {
        await sleep(100);
        problem = await bindProblem(n.address);
      }
      if (problem === undefined) continue;
      if (problem === "EADDRINUSE") {
        const other = await healthNodeId(n.address);
        throw portInUse(n, other ? `a shardctl agent (${other}) of another cluster` : "another process");
      }
      throw new UserError(`cannot listen on ${n.address} for ${n.id}: ${problem}`, {
        hint: existing ? `the ports are fixed in ${clusterFile}` : "pick another --base-port",
      });
    }
    writeAtomic(clusterFile, JSON.stringify({ nodes }, null, 2));
    for (const n of toStart) {
      const dir = join(localDir(dataDir), n.id);
      makeDir(join(dir, "data"));
      const logFile = join(dir, "agent.log");
      const logFd = openSync(logFile, "a", 0o600);
      const logOffset = fstatSync(logFd).size;
      const child = spawn(
        process.execPath,
        [
          ...AGENT_NODE_FLAGS,
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
            ...(opts.configFile ? { SHARDCTL_CONFIG: opts.configFile } : {}),
            SHARDCTL_STORE: config.store,
            SHARDCTL_ZONES: config.zones.join(","),
            SHARDCTL_SEGMENTS: String(config.segments),
          },
        },
      );
      closeSync(logFd);
      const s: Started = {
        node: n,
        child,
        logOffset,
        exited: new Promise<void>((res) =>
          child.once("exit", (code, signal) => {
            s.exit = { code, signal };
            res();
          }),
        ),
      };
      child.once("error", () => {}); // a failed spawn has no pid: reported just below
      if (child.pid === undefined) throw new UserError(`could not start the agent for ${n.id}`);
      started.push(s);
      writeFileSync(pidFile(dataDir, n.id), String(child.pid) + "\n", { mode: 0o600 });
      child.unref();
      log(`starting ${n.id} (zone ${n.zone}) on ${n.address}, pid ${child.pid}`);
    }
    const deadline = Date.now() + (opts.waitSeconds ?? 20) * 1000;
    for (const n of nodes) await awaitOwnAgent(n, deadline);
    // an agent that lost its port to another process exits only after the others answered
    for (const s of started) if (s.exit) throw agentExited(s);
    // with Consul as the store, the agents are also services in its catalog, with a health check
    if (store.kind === "consul") {
      const { registerLocalAgentServices } = await import("../consul/local-services.js");
      consulRegistered = true;
      await registerLocalAgentServices(config, nodes);
      log(`registered ${nodes.length} agent service(s) in Consul`);
    }
    // the layout: written once; an existing map is left as it is
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
    if (!vm) throw new UserError("the store holds no location map after writing the initial layout");
    let shardsAssigned = 0;
    const warnings: string[] = [];
    const byId = new Map(nodes.map((n) => [n.id, n]));
    let ours = 0;
    for (const sh of vm.map.shards) {
      const node = byId.get(sh.node);
      const mapped = vm.map.nodes.find((x) => x.id === sh.node);
      if (!node || !mapped || mapped.address !== node.address) continue; // not one of ours
      ours++;
      const r = await rpc.assignShard(node.address, sh.id, {
        epoch: sh.epoch,
        ranges: sh.ranges,
        migrationTimestamp: sh.migrationTimestamp,
        segmentCount: vm.map.segmentCount,
      });
      if (r.status === 200 || r.status === 201) shardsAssigned++;
      else warnings.push(`${node.id} refused ${sh.id} at epoch ${sh.epoch}: ${JSON.stringify(r.body)}`);
    }
    // local nodes the map reaches at another address (e.g. through a proxy in front of each
    // agent): the agents keep the shards they hold, and nothing is assigned here
    const elsewhere = vm.map.nodes.filter((m) => byId.has(m.id) && m.address !== "");
    if (ours === 0 && elsewhere.length > 0) {
      // that is a working cluster only if each of those addresses reaches the same agent; else (the
      // cluster was first started on other ports) every request would go where nothing answers
      const unreached: string[] = [];
      for (const m of elsewhere) {
        const r = await rpc.json(m.address, "GET", "/v1/node").catch(() => undefined);
        const id = (r?.body as { nodeId?: unknown } | undefined)?.nodeId;
        if (r?.status !== 200 || id !== m.id)
          unreached.push(
            `${m.id} at ${m.address} (${r ? `${r.status === 200 ? `answered as ${String(id)}` : `answered ${r.status}`}` : "no answer"})`,
          );
      }
      if (unreached.length > 0) {
        const ports = elsewhere.map((m) => /^127\.0\.0\.1:(\d+)$/.exec(m.address)?.[1]).map(Number);
        const mapNodes = vm.map.nodes;
        const asBefore =
          mapNodes.length === elsewhere.length &&
          mapNodes.every((m, i) => m.id === `node-${i + 1}` && m.address === `127.0.0.1:${ports[0] + i}`)
            ? `shardctl up --local --nodes ${mapNodes.length} --zones ${mapNodes.map((m) => m.zone).join(",")} --base-port ${ports[0]}`
            : undefined;
        throw new UserError(
          `the location map in the ${store.kind} store reaches the local nodes at other addresses, where they do not answer: ` +
            `${unreached.join(", ")}; the agents started here are ${nodes.map((n) => `${n.id} at ${n.address}`).join(", ")}`,
          {
            hint: asBefore
              ? `start the cluster where the map has it: ${asBefore}`
              : "start the local cluster with the nodes, zones and ports the map names, or in a fresh --data-dir",
          },
        );
      }
      warnings.push(
        `the location map reaches the local nodes at other addresses (${elsewhere.map((m) => `${m.id} at ${m.address}`).join(", ")}); no shard was assigned here`,
      );
    } else if (ours === 0) {
      const named = vm.map.nodes.map((x) => `${x.id} at ${x.address || "no address"}`).join(", ");
      const nodesFlag = nodes.map((n) => `${n.id}=${n.address}@${n.zone}`).join(",");
      throw new UserError(
        `no shard could be assigned: the location map in the ${store.kind} store names none of the local agents ` +
          `(it has ${named || "no nodes"}; the agents are ${nodes.map((n) => `${n.id} at ${n.address}`).join(", ")})`,
        {
          hint:
            "start the local cluster in a fresh --data-dir, or, if the store holds no data yet, give the layout " +
            `these agents: shardctl init --force --nodes ${nodesFlag} && shardctl up --local ${upFlags(nodes)}`,
        },
      );
    }
    if (ours > 0 && shardsAssigned === 0) {
      throw new UserError(
        `no shard could be assigned: the agents refused all ${ours}:\n  ${warnings.slice(0, 5).join("\n  ")}`,
        { hint: `see the agents' logs in ${localDir(dataDir)}/<node>/agent.log` },
      );
    }
    const running = nodes.map((n) => {
      const pid = runningPid(dataDir, n.id);
      return { ...n, pid, running: pid !== undefined };
    });
    return {
      nodes: running,
      started: started.map((s) => s.node.id),
      alreadyUp: started.length === 0,
      layoutWritten,
      shardsAssigned,
      tokenFile,
      warnings,
    };
  } catch (err) {
    await undoStart();
    throw err;
  } finally {
    rpc.close();
  }

  function portInUse(n: NodeInfo, holder: string): UserError {
    const port = portOf(n.address);
    return new UserError(`port ${port} (for ${n.id}) is in use by ${holder}`, {
      hint: existing
        ? `this cluster's ports are fixed in ${clusterFile}: stop what listens on ${port} ` +
          "(another local cluster: run `shardctl down` in its data dir) and run `up` again, or use a fresh --data-dir"
        : "pick another --base-port, or run `shardctl down` in the other cluster's data dir",
    });
  }

  function agentExited(s: Started): UserError {
    const logFile = join(localDir(dataDir), s.node.id, "agent.log");
    const tail = logTail(logFile, 8, s.logOffset);
    if (/EADDRINUSE|the port is in use/.test(tail)) return portInUse(s.node, "another process");
    const how = s.exit?.signal ? `was killed by ${s.exit.signal}` : `exited with code ${s.exit?.code}`;
    return new UserError(`the agent ${s.node.id} on ${s.node.address} ${how} at start:\n${tail}`, {
      hint: `see ${logFile}`,
    });
  }

  /** Waits until the agent on n's address answers as n behind this cluster's token, while it runs. */
  async function awaitOwnAgent(n: NodeInfo, deadline: number): Promise<void> {
    const mine = started.find((s) => s.node.id === n.id);
    for (;;) {
      if (mine?.exit) throw agentExited(mine);
      if (!mine && runningPid(dataDir, n.id) === undefined)
        throw new UserError(`the agent ${n.id} on ${n.address} stopped`, {
          hint: "run `shardctl up --local` again to restart it",
        });
      let r: { status: number; body: { nodeId?: unknown; address?: unknown } | undefined } | undefined;
      try {
        r = await rpc.json(n.address, "GET", "/v1/node");
      } catch {
        r = undefined; // not listening yet
      }
      if (r?.status === 200 && r.body?.nodeId === n.id) return;
      if (r?.status === 401) {
        const other = await healthNodeId(n.address);
        throw portInUse(
          n,
          `${other ? `a shardctl agent (${other})` : "an agent"} of another cluster (it refuses this cluster's token)`,
        );
      }
      if (r?.status === 200) throw portInUse(n, `an agent that calls itself ${String(r.body?.nodeId)}`);
      if (Date.now() > deadline) {
        const logFile = join(localDir(dataDir), n.id, "agent.log");
        const tail = logTail(logFile, 8, mine?.logOffset);
        throw new UserError(`the agent ${n.id} on ${n.address} did not become healthy:\n${tail}`, {
          hint: `see ${logFile}`,
        });
      }
      await sleep(100);
    }
  }

  /** On failure: stop the agents this call started, remove their pid files (and what else it created). */
  async function undoStart(): Promise<void> {
    for (const s of started) if (!s.exit) s.child.kill("SIGTERM");
    const stopBy = Date.now() + 5000;
    for (const s of started) {
      if (!s.exit) await Promise.race([s.exited, sleep(Math.max(0, stopBy - Date.now()))]);
      if (!s.exit) {
        s.child.kill("SIGKILL");
        await s.exited;
      }
      rmSync(pidFile(dataDir, s.node.id), { force: true });
    }
    if (started.length > 0)
      log(`stopped the agent(s) this run started: ${started.map((s) => s.node.id).join(", ")}`);
    if (consulRegistered && started.length > 0) {
      const { deregisterLocalAgentServices } = await import("../consul/local-services.js");
      await deregisterLocalAgentServices(
        config,
        started.map((s) => s.node),
      ).catch(() => []);
    }
    // a first `up` that failed leaves no nodes behind, so that the next one may pick other ports
    if (!existing && !layoutWritten) rmSync(clusterFile, { force: true });
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
  if (!existsSync(clusterFile)) return { stopped: [], killed: [], notRunning: [] };
  const release = await lockLocalCluster(dataDir);
  try {
    return await localDownLocked(config, timeoutMs, log);
  } finally {
    release();
  }
}

async function localDownLocked(
  config: Config,
  timeoutMs: number,
  log: (msg: string) => void,
): Promise<LocalDownResult> {
  const dataDir = resolve(config.dataDir);
  const clusterFile = join(localDir(dataDir), "cluster.json");
  const result: LocalDownResult = { stopped: [], killed: [], notRunning: [] };
  if (!existsSync(clusterFile)) return result;
  const nodes = readClusterNodes(clusterFile);
  // every file read (and checked) before anything is changed: a refused `down` stops and removes nothing
  const running = nodes.map((n) => ({ id: n.id, pid: runningPid(dataDir, n.id) }));
  if (config.store === "consul") {
    const { deregisterLocalAgentServices } = await import("../consul/local-services.js");
    const failed = await deregisterLocalAgentServices(config, nodes);
    for (const f of failed) log(`could not deregister ${f.node} from Consul: ${f.error}`);
  }
  const pids = new Map<string, number>();
  for (const { id, pid } of running) {
    if (pid === undefined) {
      result.notRunning.push(id);
      rmSync(pidFile(dataDir, id), { force: true });
      continue;
    }
    process.kill(pid, "SIGTERM");
    pids.set(id, pid);
  }
  const deadline = Date.now() + timeoutMs;
  for (const [id, pid] of pids) {
    while (processAlive(pid) && Date.now() < deadline) await sleep(50);
    if (processAlive(pid)) {
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
