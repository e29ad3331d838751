/**
 * The routing client for applications. It caches the location map (a
 * RoutingTable from the LocationStore), hashes each key to its segment and
 * shard, and sends the request to the shard's owner with the shard's epoch and
 * the client's origin zone. It then reacts to what the agent says:
 *
 * - 421 not-owner with a redirect hint → retries at the hinted owner and
 *   epoch (at most a few hops), and refreshes its map;
 * - 409 stale-epoch / wrong-shard, 404 unknown-shard → refreshes its map
 *   and retries (with backoff while the map has not caught up);
 * - 503 fenced (a migration cutting over) or an unreachable agent →
 *   exponential backoff with jitter, map refresh, retry until the deadline.
 *
 * Every put and delete is one logical write with a write id (newWriteId: 8
 * random bytes naming this client, then an 8-byte counter), sent as
 * `x-write-id` on every attempt at it. So a retry after an answer that was
 * lost — an agent killed after the fsync, a cut connection, a fence, a
 * redirect to the shard's new owner — is recognised by the agent that holds
 * the write (or the copy it migrated to) and answered with the original
 * outcome instead of being applied twice (`duplicate` says so). The agent
 * remembers the last 2^20 ids per shard (src/agent/write-ids.ts); a retry
 * comes within this client's deadline.
 */
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { RoutingTable } from "../engine/location-map.js";
import type { LocationStore } from "../engine/ports.js";
import { Segmenter, validateKey } from "../engine/segmenter.js";
import { PreconditionError, UsageError, UserError } from "../errors.js";
import { AgentRpc, keyPath, type AgentResponse } from "../cluster/agent-rpc.js";

export interface ShardClientOptions {
  store: LocationStore;
  token: string;
  /** Sent as x-origin-zone so the agent counts the access for this zone. */
  originZone?: string;
  maxKeyBytes?: number;
  maxValueBytes?: number;
  /** Give up on one operation after this long (default 10 s). */
  deadlineMs?: number;
  /** First backoff delay (default 20 ms); doubles per retry up to maxBackoffMs (default 1 s). */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  maxSockets?: number;
}

export interface WriteOptions {
  /**
   * The id of this logical write (16 bytes), for an application that retries
   * a write itself (another client, a restarted process) and wants it applied
   * once; a fresh one when absent.
   */
  writeId?: Buffer;
}

export interface PutResult {
  lsn: number;
  /** The write was already applied (an earlier attempt's answer was lost); `lsn` is the original's. */
  duplicate?: boolean;
}

export interface DeleteResult extends PutResult {
  existed: boolean;
}

export interface GetResult {
  value: Buffer;
  lsn: number;
  timestamp: number;
}

interface Target {
  address: string;
  shardId: string;
  epoch: number;
}

const MAX_REDIRECT_HOPS = 3;

export class ShardClient {
  private table?: RoutingTable;
  private segmenter?: Segmenter;
  private readonly rpc: AgentRpc;
  /** Counters for tests and diagnostics (`duplicates`: writes an agent had already applied). */
  readonly stats = { requests: 0, retries: 0, redirects: 0, refreshes: 0, duplicates: 0 };
  /** The first 8 bytes of this client's write ids (random: no two clients share them in practice). */
  private readonly clientId = randomBytes(8);
  private writeSeq = 0;

  constructor(private readonly opts: ShardClientOptions) {
    this.rpc = new AgentRpc({ token: opts.token, maxSockets: opts.maxSockets });
  }

  async get(key: string): Promise<GetResult | null> {
    const res = await this.send(key, "GET");
    if (res === null) return null;
    return {
      value: res.body,
      lsn: Number(res.headers["x-lsn"] ?? 0),
      timestamp: Number(res.headers["x-timestamp"] ?? 0),
    };
  }

  async put(key: string, value: Buffer | string, opts: WriteOptions = {}): Promise<PutResult> {
    const body = typeof value === "string" ? Buffer.from(value) : value;
    const max = this.opts.maxValueBytes;
    if (max !== undefined && body.length > max) {
      throw new UsageError(`the value is ${body.length} bytes; the limit is ${max} (limits.maxValueBytes)`);
    }
    const res = await this.send(key, "PUT", body, this.writeIdFor(opts));
    const r = JSON.parse(res!.body.toString("utf8")) as { lsn: number };
    return this.writeResult(res!, { lsn: r.lsn });
  }

  async delete(key: string, opts: WriteOptions = {}): Promise<DeleteResult> {
    const res = await this.send(key, "DELETE", undefined, this.writeIdFor(opts));
    const r = JSON.parse(res!.body.toString("utf8")) as { lsn: number; existed: boolean };
    return this.writeResult(res!, { lsn: r.lsn, existed: r.existed });
  }

  /** A fresh write id: this client's 8 random bytes, then a counter (big-endian). */
  newWriteId(): Buffer {
    const id = Buffer.allocUnsafe(16);
    this.clientId.copy(id, 0);
    this.writeSeq++;
    id.writeUInt32BE(Math.floor(this.writeSeq / 4294967296), 8);
    id.writeUInt32BE(this.writeSeq % 4294967296, 12);
    return id;
  }

  private writeIdFor(opts: WriteOptions): string {
    const id = opts.writeId ?? this.newWriteId();
    if (id.length !== 16) throw new UsageError(`a write id is 16 bytes, not ${id.length}`);
    return id.toString("hex");
  }

  private writeResult<T extends PutResult>(res: AgentResponse, r: T): T {
    if (res.headers["x-write-duplicate"] === "true") {
      this.stats.duplicates++;
      r.duplicate = true;
    }
    return r;
  }

  /** Reloads the map from the store. */
  async refresh(): Promise<RoutingTable> {
    this.stats.refreshes++;
    const vm = await this.opts.store.load();
    if (!vm) {
      throw new PreconditionError("the location store holds no map yet", {
        hint: "start a local cluster with `shardctl up --local`, or initialise the store",
      });
    }
    if (!this.table || vm.version !== this.table.version || vm.map !== this.table.map) {
      this.table = new RoutingTable(vm);
      if (!this.segmenter || this.segmenter.segmentCount !== vm.map.segmentCount) {
        this.segmenter = new Segmenter(vm.map.segmentCount, this.opts.maxKeyBytes ?? 1024);
      }
    }
    return this.table;
  }

  private async route(key: string): Promise<Target> {
    const table = this.table ?? (await this.refresh());
    const shard = table.shardOf(this.segmenter!.segmentOf(key));
    const node = table.node(shard.node);
    if (!node)
      throw new UserError(`the location map names node ${shard.node} for ${shard.id} but does not list it`);
    return { address: node.address, shardId: shard.id, epoch: shard.epoch };
  }

  /** Sends one key request, following the agent's answers; null for a 404 key-not-found. */
  private async send(
    key: string,
    method: "GET" | "PUT" | "DELETE",
    body?: Buffer,
    writeId?: string,
  ): Promise<AgentResponse | null> {
    validateKey(key, this.opts.maxKeyBytes ?? 1024);
    const deadline = Date.now() + (this.opts.deadlineMs ?? 10_000);
    let attempt = 0;
    let hops = 0;
    let override: Target | undefined;
    let last = "";
    for (;;) {
      const target = override ?? (await this.route(key));
      override = undefined;
      const headers: Record<string, string> = { "x-shard-epoch": String(target.epoch) };
      if (this.opts.originZone) headers["x-origin-zone"] = this.opts.originZone;
      if (body) headers["content-type"] = "application/octet-stream";
      // the same id on every attempt: the agent applies the write once, whichever attempt arrives
      if (writeId) headers["x-write-id"] = writeId;
      let res: AgentResponse | undefined;
      this.stats.requests++;
      try {
        res = await this.rpc.request(target.address, method, keyPath(target.shardId, key), { headers, body });
      } catch (err) {
        last = `${target.address} unreachable: ${(err as Error).message}`;
      }
      if (res) {
        if (res.status === 200) return res;
        const info = parseError(res);
        last = `${target.address} answered ${res.status} ${info.error}: ${info.message}`;
        switch (res.status) {
          case 404:
            if (info.error === "key-not-found") return null;
            break; // unknown-shard: the map moved on; refresh below
          case 421:
            if (info.redirect && hops < MAX_REDIRECT_HOPS) {
              hops++;
              this.stats.redirects++;
              override = {
                address: info.redirect.address,
                shardId: target.shardId,
                epoch: info.redirect.epoch,
              };
              this.table = undefined; // refresh on the next lookup
              continue;
            }
            break;
          case 400:
            throw new UsageError(`the agent refused the request: ${info.message}`);
          case 413:
            throw new UsageError(info.message, {
              hint: "use a smaller key or value, or raise limits in the config",
            });
          case 401:
            throw new UserError(`the agent at ${target.address} refused the token`, {
              hint: "use the cluster's token (agent.token, SHARDCTL_TOKEN or <dataDir>/local/token)",
            });
          case 409:
          case 503:
            break;
          default:
            if (res.status >= 500 && info.error === "shard-failed") {
              throw new UserError(
                `shard ${target.shardId} on ${target.address} is refused by its agent: ${info.message}`,
              );
            }
        }
      }
      if (Date.now() >= deadline) {
        throw new UserError(`gave up on ${method} after ${attempt + 1} attempts: ${last}`, {
          hint: "check that the agents are up (`shardctl up --local` starts a local cluster)",
        });
      }
      this.stats.retries++;
      const cap = Math.min(this.opts.maxBackoffMs ?? 1000, (this.opts.baseBackoffMs ?? 20) * 2 ** attempt);
      attempt++;
      await sleep(Math.min(Math.max(0, deadline - Date.now()), cap * (0.5 + Math.random() / 2)));
      try {
        await this.refresh();
      } catch (err) {
        if (err instanceof PreconditionError) throw err;
        last = `cannot reload the location map: ${(err as Error).message}`;
      }
    }
  }

  close(): void {
    this.rpc.close();
  }
}

interface ErrorInfo {
  error: string;
  message: string;
  epoch?: number;
  redirect?: { node: string; address: string; epoch: number } | null;
}

function parseError(res: AgentResponse): ErrorInfo {
  try {
    const j = JSON.parse(res.body.toString("utf8")) as ErrorInfo;
    return { ...j, error: String(j.error ?? "unknown"), message: String(j.message ?? "") };
  } catch {
    return { error: "unknown", message: res.body.toString("utf8").slice(0, 200) };
  }
}
