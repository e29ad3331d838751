/**
 * The node agent: hosts log shards under <dataDir>/shards/<id>/, serves the
 * HTTP API (server.ts), counts every access in the engine's access windows,
 * and shuts down cleanly on SIGTERM (stop accepting, finish the fsyncs in
 * flight, exit 0).
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, realpathSync, rmSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { AccessWindows, type WindowLevel } from "../engine/access-windows.js";
import { SHARD_ID_PATTERN, type LocationMap } from "../engine/location-map.js";
import { purgeStrays } from "./import.js";
import { resolveInDoubt } from "./in-doubt.js";
import { Segmenter } from "../engine/segmenter.js";
import { writeAtomic } from "../store/embedded.js";
import { UserError } from "../errors.js";
import { makeDirsFor } from "../fs-paths.js";
import { answerClientError, ApiError, maxHeaderBytes } from "./http-util.js";
import { AgentMetrics } from "./metrics.js";
import { startBinaryServer, type BinaryListener } from "./binary.js";
import { writeFileAtomic, writeFully } from "./fs-util.js";
import { handleRequest } from "./server.js";
import { pipeInSlices } from "../slices.js";
import { Shard, type ShardOptions } from "./shard.js";

export interface AgentOptions {
  dataDir: string;
  host: string;
  port: number;
  zone: string;
  nodeId: string;
  token: string;
  segments: number;
  zones: readonly string[];
  levels: readonly WindowLevel[];
  maxKeyBytes: number;
  maxValueBytes: number;
  /** Where the binary protocol listens (binary.ts); none when absent. */
  binaryHost?: string;
  binaryPort?: number;
  /** Connections accepted at once on each listener (default 1024); more are closed as they arrive. */
  maxConnections?: number;
  /** An HTTP request's headers must arrive within this (default 10 s). */
  headersTimeoutMs?: number;
  /** An HTTP connection with a request under way and no byte either way for this long is closed (default 60 s). */
  idleTimeoutMs?: number;
  /** An idle keep-alive HTTP connection is closed after this (default 65 s). */
  keepAliveTimeoutMs?: number;
  /** A binary frame must arrive whole within this of its first byte (default 30 s). */
  frameTimeoutMs?: number;
  /** Log files are sealed at this size (default 64 MiB). */
  maxFileBytes?: number;
  /** A snapshot is written after this many log bytes (default 256 MiB). */
  snapshotBytes?: number;
  /**
   * The access windows are saved every this many ms (default 60 s; 0: only on
   * a clean stop), so a crash loses at most this much access history.
   */
  windowsSaveMs?: number;
  log?: (msg: string) => void;
}

/**
 * Which data directory an agent serves, as /health tells it without naming the path: the first 16
 * hex digits of the SHA-256 of its real path. A deploy's health check compares it with its own
 * install's, so that another agent answering on the address (an old install in another directory)
 * is not taken for the one it started.
 */
export function dataDirId(dataDir: string): string {
  let real = dataDir;
  try {
    real = realpathSync(dataDir);
  } catch {
    // not there (yet): the path as given
  }
  return createHash("sha256").update(real).digest("hex").slice(0, 16);
}

export class Agent {
  readonly shards = new Map<string, Shard>();
  private dataDirIdCache?: string;
  readonly windows: AccessWindows;
  readonly segmenter: Segmenter;
  readonly metrics: AgentMetrics;
  readonly shardOptions: ShardOptions;
  readonly log: (msg: string) => void;
  server?: Server;
  binary?: BinaryListener;
  stopping = false;
  private readonly sockets = new Set<Socket>();
  private windowsTimer?: NodeJS.Timeout;
  private windowsSaving?: Promise<void>;
  /** GET /v1/access/export answers being written (server.ts bounds them). */
  windowExports = 0;

  /** dataDirId of opts.dataDir, computed when first asked (the directory exists by then). */
  get dataDirId(): string {
    return (this.dataDirIdCache ??= dataDirId(this.opts.dataDir));
  }

  constructor(readonly opts: AgentOptions) {
    this.log = opts.log ?? ((m) => process.stderr.write(`${new Date().toISOString()} ${m}\n`));
    this.segmenter = new Segmenter(opts.segments, opts.maxKeyBytes);
    this.windows = this.loadWindows();
    this.metrics = new AgentMetrics({
      shards: () => {
        // (a released copy only redirects: it holds no data and is not hosted here)
        let n = 0;
        for (const s of this.shards.values()) if (s.meta.state !== "not-owned") n++;
        return n;
      },
      keys: () => {
        let n = 0;
        for (const s of this.shards.values()) n += s.state.size;
        return n;
      },
      logBytes: () => {
        let n = 0;
        for (const s of this.shards.values()) n += s.logBytes;
        return n;
      },
    });
    this.shardOptions = {
      maxFileBytes: opts.maxFileBytes ?? 64 * 1024 * 1024,
      snapshotBytes: opts.snapshotBytes ?? 256 * 1024 * 1024,
      warn: this.log,
      onFlush: (entries, bytes, ms) => this.metrics.recordFlush(entries, bytes, ms),
    };
  }

  get shardsDir(): string {
    return join(this.opts.dataDir, "shards");
  }

  private get windowsFile(): string {
    return join(this.opts.dataDir, "access-windows.bin");
  }

  private loadWindows(): AccessWindows {
    const fresh = () =>
      new AccessWindows({
        segmentCount: this.opts.segments,
        zones: this.opts.zones,
        levels: this.opts.levels,
      });
    if (!existsSync(this.windowsFile)) return fresh();
    try {
      const w = AccessWindows.deserialize(readFileSync(this.windowsFile));
      if (
        w.segmentCount === this.opts.segments &&
        w.zones.join(",") === this.opts.zones.join(",") &&
        JSON.stringify(w.levels) === JSON.stringify(this.opts.levels)
      ) {
        return this.rebasedIfAhead(w, fresh);
      }
      this.log(
        `access windows in ${this.windowsFile} were kept with other segments, zones or levels; starting fresh`,
      );
    } catch (err) {
      this.log(`access windows in ${this.windowsFile} not loaded: ${(err as Error).message}; starting fresh`);
    }
    return fresh();
  }

  /**
   * Windows saved while this host's clock was ahead (it has been stepped back since: an NTP
   * correction, a VM's clock fixed) have their newest slots in this clock's future: every new
   * access then looked late, and went past the second and minute levels into the hour's, so
   * predict, plan and reshard saw the segments idle for as long as the clock had been ahead. The
   * file's modification time tells: the windows are moved back by how far it lies ahead of now.
   */
  private rebasedIfAhead(w: AccessWindows, fresh: () => AccessWindows): AccessWindows {
    const aheadMs = statSync(this.windowsFile).mtimeMs - Date.now();
    if (!(aheadMs > WINDOWS_AHEAD_TOLERANCE_MS)) return w;
    const moved = fresh();
    const stream = moved.importStream({ clockOffsetMs: aheadMs });
    for (const piece of w.serializeStream().pieces) if (piece) for (const _ of stream.push(piece));
    stream.finish();
    this.log(
      `access windows in ${this.windowsFile} were saved ${Math.round(aheadMs / 1000)} s ahead of this host's clock (it was stepped back since): moved back by as much`,
    );
    return moved;
  }

  /** Saves the access windows every `windowsSaveMs` from now on (startAgent calls it once it listens). */
  startWindowCheckpoints(): void {
    const every = this.opts.windowsSaveMs ?? 60_000;
    if (every <= 0 || this.windowsTimer) return;
    this.windowsTimer = setInterval(() => void this.saveWindows(), every);
    this.windowsTimer.unref();
  }

  /**
   * Writes the access windows to <dataDir>/access-windows.bin atomically (one
   * save at a time; a save asked for during another joins it). They are laid
   * out a chunk of segments at a time between other requests and written to
   * the file as they come (pipeInSlices), never held whole in memory; a
   * failure is logged and the next save tries again.
   */
  saveWindows(): Promise<void> {
    if (this.windowsSaving) return this.windowsSaving;
    this.windowsSaving = writeFileAtomic(this.windowsFile, async (fh) => {
      let pos = 0;
      await pipeInSlices(this.windows.serializeStream().pieces, async (piece) => {
        await writeFully(fh, piece, pos);
        pos += piece.length;
      });
    })
      .catch((err: Error) => this.log(`could not save access windows: ${err.message}`))
      .finally(() => (this.windowsSaving = undefined));
    return this.windowsSaving;
  }

  /** Recovers every shard under <dataDir>/shards. */
  async recover(): Promise<void> {
    // a file in the way (the data directory, or its shards/) is said as such, not an internal error
    makeDirsFor(
      this.shardsDir,
      "the agent's shard directory",
      "give --data-dir a directory (or a path where one can be made), or move the file out of the way",
      0o700,
    );
    for (const name of readdirSync(this.shardsDir).sort()) {
      if (!SHARD_ID_PATTERN.test(name)) {
        this.log(`recovery: ignoring ${join(this.shardsDir, name)}: not a shard id`);
        continue;
      }
      const t0 = Date.now();
      try {
        const shard = await Shard.open(join(this.shardsDir, name), name, this.shardOptions);
        this.shards.set(name, shard);
        this.log(
          `recovery: shard ${name}: ${shard.failed ? "FAILED" : "ok"}, lsn ${shard.lsn}, ${shard.state.size} keys, epoch ${shard.meta.epoch} (${shard.meta.state}), ${Date.now() - t0} ms`,
        );
      } catch (err) {
        this.log(`recovery: shard ${name} not loaded: ${(err as Error).message}`);
      }
    }
  }

  async listen(): Promise<AddressInfo> {
    const headersTimeout = this.opts.headersTimeoutMs ?? 10_000;
    const server = createServer(
      {
        // slowloris: headers must arrive whole in time, checked every second (Node's default 30 s
        // check interval would let a partial request sit for up to headersTimeout + 30 s)
        headersTimeout,
        connectionsCheckingInterval: Math.min(1000, headersTimeout),
        maxHeaderSize: maxHeaderBytes(this.opts.maxKeyBytes),
        // no bound on a whole request: a snapshot upload (PUT …/snapshot) streams for as long as the
        // shard is large; a stalled one is cut by the idle timeout below instead
        requestTimeout: 0,
        keepAliveTimeout: this.opts.keepAliveTimeoutMs ?? 65_000,
        // handleRequest refuses an HTTP/1.1 request without Host itself, with a JSON error (Node's
        // own refusal is an empty 400)
        requireHostHeader: false,
      },
      (req, res) => {
        void handleRequest(this, req, res);
      },
    );
    // a connection with a request under way (a body still coming, an answer still going) and no byte
    // either way for this long is destroyed (no "timeout" listener: Node destroys it). Streams that
    // flow (migration copies, large values) refresh it with every chunk.
    server.timeout = this.opts.idleTimeoutMs ?? 60_000;
    // a request the parser refuses is answered with a JSON error like any other, then closed
    server.on("clientError", answerClientError);
    // more connections are closed on arrival: memory and file descriptors stay bounded
    server.maxConnections = this.opts.maxConnections ?? 1024;
    this.fdLimit = openFileLimit();
    server.on("connection", (s) => {
      s.setNoDelay(true);
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    if (this.opts.binaryPort !== undefined) {
      this.binary = await startBinaryServer(
        this,
        this.opts.binaryHost ?? this.opts.host,
        this.opts.binaryPort,
      );
    }
    this.applyConnectionLimit(true);
    return server.address() as AddressInfo;
  }

  /** The process's limit on open files, read when the agent starts listening. */
  private fdLimit?: number;

  /**
   * Keeps the connections from taking the file descriptors the shards need: each listener takes
   * at most its share of what the open-file limit leaves after the shards' files and a reserve
   * (limits.maxConnections, when lower, stands). Connections over the limit were accepted until
   * EMFILE, and a shard whose log then moved on to its next file failed until a restart.
   * Re-applied as shards come and go; warns at start when the limit leaves little room.
   */
  applyConnectionLimit(atStart = false): void {
    const listeners = [this.server, this.binary?.server].filter((s) => s !== undefined);
    const limit = connectionLimit({
      configured: this.opts.maxConnections ?? 1024,
      fdLimit: this.fdLimit,
      shards: this.shards.size,
      listeners: listeners.length,
    });
    for (const s of listeners) s.maxConnections = limit;
    if (atStart && this.fdLimit !== undefined && limit < (this.opts.maxConnections ?? 1024))
      this.log(
        `the open-file limit (${this.fdLimit}) leaves room for ${limit} connection(s) per listener beside ${this.shards.size} shard(s)` +
          `${limit < MIN_COMFORTABLE_CONNECTIONS ? ": raise it (ulimit -n, or LimitNOFILE= in a systemd unit)" : ""}`,
      );
  }

  /** Stops accepting, lets writes in flight reach their fsync, saves the windows, closes the logs. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const closed = new Promise<void>((resolve) =>
      this.server ? this.server.close(() => resolve()) : resolve(),
    );
    this.server?.closeIdleConnections();
    this.binary?.server.close();
    for (const s of this.shards.values()) await s.drain();
    clearInterval(this.windowsTimer);
    await this.windowsSaving;
    try {
      writeAtomic(this.windowsFile, this.windows.serializeStream().pieces);
    } catch (err) {
      this.log(`could not save access windows: ${(err as Error).message}`);
    }
    for (const s of this.shards.values()) await s.close();
    // responses of the drained writes are written by now; connections still open are idle keep-alives
    setTimeout(() => {
      this.server?.closeAllConnections();
      this.binary?.destroyConnections();
    }, 200).unref();
    await closed;
  }

  /** Creates a shard owned at `epoch` (the caller checked the id). */
  async createShard(
    id: string,
    epoch: number,
    ranges: [number, number][] | undefined,
    migrationTimestamp: number,
    state: "owned" | "receiving" = "owned",
  ): Promise<Shard> {
    const dir = join(this.shardsDir, id);
    if (existsSync(dir)) {
      // a directory this agent did not load: never overwrite data it may hold
      const data = readdirSync(dir).filter((f) => /^(log-\d+\.seg|snapshot-\d+\.snap|meta\.json)$/.test(f));
      if (data.length > 0) {
        throw new ApiError(
          409,
          "shard-dir-exists",
          `${dir} holds data (${data.slice(0, 3).join(", ")}) that this agent could not load (see its log); it was left untouched`,
        );
      }
      rmSync(dir, { recursive: true, force: true }); // an empty leftover of a half-created shard
    }
    // A shard that cannot be made whole (out of file descriptors or disk space, an I/O error) is not
    // kept: it holds no data yet, so its directory goes and the caller hears why. Kept, it answered
    // 201 with state "failed", and refused every request until a restart.
    const refuse = (why: string) => {
      rmSync(dir, { recursive: true, force: true });
      return new ApiError(
        503,
        "create-failed",
        `shard ${id} could not be created on this agent (${this.opts.nodeId}): ${why}; nothing was created`,
        {},
        { "retry-after": "1" },
      );
    };
    let shard: Shard;
    try {
      shard = await Shard.create(dir, id, { epoch, state, ranges, migrationTimestamp }, this.shardOptions);
    } catch (err) {
      throw refuse((err as Error).message);
    }
    if (shard.failed) {
      const why = shard.failed;
      await shard.close().catch(() => undefined);
      throw refuse(why);
    }
    this.shards.set(id, shard);
    this.applyConnectionLimit();
    return shard;
  }

  /**
   * Deletes a released copy's data (Shard.discardData) and says so; a failure is logged, not thrown:
   * the release is done and durable, and the next start tries again.
   */
  async discardReleased(shard: Shard, why = "released"): Promise<void> {
    try {
      const files = await shard.discardData();
      if (files > 0) this.log(`shard ${shard.id}: ${why}: its copy's data deleted (${files} files)`);
    } catch (err) {
      this.log(
        `shard ${shard.id}: ${why}, but its copy's data could not be deleted: ${(err as Error).message}`,
      );
    }
  }

  async dropShard(id: string): Promise<void> {
    const shard = this.shards.get(id);
    if (!shard) return;
    this.shards.delete(id);
    this.applyConnectionLimit();
    await shard.drain();
    await shard.close();
    rmSync(shard.dir, { recursive: true, force: true });
  }
}

/**
 * Deletes the stale keys of the shards (purgeStrays), once the location map says the layout has
 * this agent's segment count: an agent started with another count (a wrong SHARDCTL_SEGMENTS)
 * would take its own keys for strays. Without a readable map nothing is deleted (the keys are
 * never served; an import of their ranges deletes them first).
 */
async function purgeStraysChecked(agent: Agent, loadMap: () => Promise<LocationMap | null>): Promise<void> {
  let map: LocationMap | null;
  try {
    map = await loadMap();
  } catch (err) {
    agent.log(
      `recovery: stale keys not looked for: the location map cannot be read (${(err as Error).message})`,
    );
    return;
  }
  if (!map) return;
  if (map.segmentCount !== agent.opts.segments) {
    agent.log(
      `recovery: WARNING: the location map has ${map.segmentCount} segments but this agent was started with ${agent.opts.segments}: ` +
        `every key is answered as another shard's; restart it with --segments ${map.segmentCount} (SHARDCTL_SEGMENTS)`,
    );
    return;
  }
  for (const shard of agent.shards.values()) {
    // a shard whose purge fails keeps its stale keys (and says so); the agent still starts whole: it
    // listens already, and a start that stopped here would serve without its signal handlers
    try {
      const n = await purgeStrays(agent, shard);
      if (n > 0)
        agent.log(
          `recovery: shard ${shard.id}: deleted ${n} stale keys outside its ranges (left by a split)`,
        );
    } catch (err) {
      agent.log(
        `recovery: WARNING: shard ${shard.id}: stale keys outside its ranges not deleted: ${(err as Error).message}`,
      );
    }
  }
}

/** Starts an agent: recovers, listens, and stops cleanly on SIGTERM/SIGINT when `handleSignals`. */
export async function startAgent(
  opts: AgentOptions,
  handleSignals = false,
  /** Reads the location map, for shards a restart left in the middle of a migration (in-doubt.ts). */
  loadMap?: () => Promise<LocationMap | null>,
): Promise<{ agent: Agent; address: AddressInfo }> {
  const agent = new Agent(opts);
  refuseTooFewFileDescriptors(agent.shardsDir, openFileLimit());
  await agent.recover();
  let strays = Promise.resolve();
  let readMap: (() => Promise<LocationMap | null>) | undefined;
  if (loadMap) {
    // one read of the map for both the shards in doubt and the stray keys' check
    let read: Promise<LocationMap | null> | undefined;
    const map = () => (read ??= loadMap());
    for (const r of await resolveInDoubt(agent, map))
      agent.log(`recovery: shard ${r.shard} (${r.was}, in a migration): ${r.action}: ${r.why}`);
    // once the map confirms this agent's segment count (with another, every key would look outside)
    strays = purgeStraysChecked(agent, map);
    readMap = map;
  }
  // copies released before (or just now, in doubt) whose data is still here: an agent from before
  // the release discarded it, or a crash in the middle of it
  for (const shard of agent.shards.values())
    if (!shard.failed && shard.meta.state === "not-owned")
      await agent.discardReleased(shard, "recovery: released");
  let address: AddressInfo;
  try {
    address = await agent.listen();
  } catch (err) {
    // the shards were recovered and opened: close them before giving up
    await agent.stop().catch(() => undefined);
    throw listenError(err);
  }
  await strays;
  if (readMap) await dropMergedAway(agent, readMap);
  agent.startWindowCheckpoints();
  agent.log(
    `agent ${opts.nodeId} (zone ${opts.zone}) listening on ${address.address}:${address.port}` +
      (agent.binary ? ` (binary protocol on port ${agent.binary.port})` : "") +
      `, ${agent.shards.size} shards`,
  );
  if (handleSignals) {
    const onSignal = (sig: string) => {
      agent.log(`${sig}: stopping (finishing writes in flight)`);
      agent.stop().then(
        () => {
          agent.log("stopped");
          process.exit(0);
        },
        (err) => {
          agent.log(`stop failed: ${(err as Error).message}`);
          process.exit(1);
        },
      );
    };
    process.once("SIGTERM", () => onSignal("SIGTERM"));
    process.once("SIGINT", () => onSignal("SIGINT"));
  }
  return { agent, address };
}

/**
 * Removes the released copies (not-owned: a redirect, no data) of shards the location map no longer
 * has: a merge's absorbed shards, whose ids are never used again. Kept, one directory stayed per
 * merge for ever, each reopened at every start. A client that still routes to such an id gets 404
 * unknown-shard, which makes it reload the map, as the redirect would have. A map that cannot be
 * read changes nothing.
 */
async function dropMergedAway(agent: Agent, map: () => Promise<LocationMap | null>): Promise<void> {
  let m: LocationMap | null;
  try {
    m = await map();
  } catch {
    return;
  }
  if (!m) return;
  const inMap = new Set(m.shards.map((s) => s.id));
  for (const shard of [...agent.shards.values()]) {
    if (shard.failed || shard.meta.state !== "not-owned" || inMap.has(shard.id)) continue;
    await agent.dropShard(shard.id);
    agent.log(`recovery: shard ${shard.id}: released here and no longer in the location map: removed`);
  }
}

/** A windows file this far in the future was saved on a clock that has been stepped back since. */
const WINDOWS_AHEAD_TOLERANCE_MS = 60_000;

/** File descriptors a shard may hold at once (its active log, a snapshot or an export being read). */
const FDS_PER_SHARD = 2;
/** File descriptors kept for the rest: standard streams, the windows file, outgoing requests, … */
const FD_RESERVE = 64;
/** Fewer connections per listener than this is worth a word to the operator. */
const MIN_COMFORTABLE_CONNECTIONS = 64;

/**
 * Connections each listener may hold: its share of the open-file limit after the shards' files and
 * a reserve, at least 1, at most `configured` (without a known limit, `configured`).
 */
export function connectionLimit(o: {
  configured: number;
  fdLimit: number | undefined;
  shards: number;
  listeners: number;
}): number {
  if (o.fdLimit === undefined) return o.configured;
  const room = o.fdLimit - FD_RESERVE - FDS_PER_SHARD * o.shards;
  return Math.max(1, Math.min(o.configured, Math.floor(room / Math.max(1, o.listeners))));
}

/** The soft limit on open files from /proc/self/limits (or `text`); undefined if unknown or unlimited. */
export function openFileLimit(text?: string): number | undefined {
  let limits = text;
  if (limits === undefined) {
    try {
      limits = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return undefined;
    }
  }
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(limits);
  if (!m || m[1] === "unlimited") return undefined;
  return Number(m[1]);
}

/**
 * Refuses to start (before any shard is opened) when the open-file limit cannot hold the shards'
 * files and a few connections: recovery would otherwise fail shards at random with EMFILE (and
 * call their files damaged), then the listener, with an internal error.
 */
function refuseTooFewFileDescriptors(shardsDir: string, fdLimit: number | undefined): void {
  if (fdLimit === undefined) return;
  let shards: number;
  try {
    shards = readdirSync(shardsDir).length;
  } catch {
    return; // none yet, or not a directory: recovery says what is wrong with it
  }
  const need = FD_RESERVE + FDS_PER_SHARD * shards + 2;
  if (fdLimit < need)
    throw new UserError(
      `the open-file limit is ${fdLimit}, too low for this agent's ${shards} shard(s): it needs at least ${need} file descriptors`,
      {
        hint: "raise it where the agent starts (ulimit -n, or LimitNOFILE= in a systemd unit); nothing was changed",
      },
    );
}

/** A port that cannot be had is the operator's to fix: a clean error, not an internal one. */
function listenError(err: unknown): unknown {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
  const why: Record<string, string> = {
    EADDRINUSE: "the port is in use",
    EACCES: "permission denied (ports below 1024 need privileges)",
    EADDRNOTAVAIL: "no interface of this machine has that address",
    EMFILE:
      "the agent is out of file descriptors (its shards hold them): raise the open-file limit (ulimit -n, or LimitNOFILE= in a systemd unit)",
    ENFILE: "the system is out of file descriptors: close other programs' files or raise fs.file-max",
  };
  if (!e.code || !(e.code in why)) return err;
  return new UserError(`cannot listen on ${e.address ?? "?"}:${e.port ?? "?"}: ${why[e.code]}`, {
    hint:
      e.code === "EMFILE" || e.code === "ENFILE"
        ? "nothing was changed; start the agent again once there is room"
        : "choose another --listen (or --listen-binary) address, or stop what listens there",
    cause: err,
  });
}
