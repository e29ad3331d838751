/**
 * The routing client for applications. It caches the location map (a
 * RoutingTable from the LocationStore), hashes each key to its segment and
 * shard, and sends the request to the shard's owner with the shard's epoch and
 * the client's origin zone. It then reacts to what the agent says:
 *
 * - 421 not-owner with a redirect hint → retries at the hinted owner and
 *   epoch (at most a few hops, never round a cycle), and refreshes its map
 *   (keeping the one in hand while the store cannot be read);
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
 *
 * The deadline bounds the whole operation, including an attempt the agent
 * never answers. A write given up on at the deadline is in doubt (its last
 * attempt may still be applied, even after a later write): an application
 * that retries it passes the same write id (`put(key, value, {writeId})`),
 * so it is applied at most once.
 */
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { RoutingTable } from "../engine/location-map.js";
import type { LocationStore } from "../engine/ports.js";
import { Segmenter, validateKey } from "../engine/segmenter.js";
import { PreconditionError, UsageError, UserError } from "../errors.js";
import { AgentRpc, keyPath, splitAddress, type AgentResponse } from "../cluster/agent-rpc.js";

export interface ShardClientOptions {
  store: LocationStore;
  token: string;
  /** Sent as x-origin-zone so the agent counts the access for this zone (a configured zone's name). */
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
/** The zone names a config may hold (src/config.ts), so the only ones an agent counts. */
const ZONE_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/** Transport errors that mean the request never left this machine: a write that met them is not in doubt. */
const NOT_CONNECTED = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"]);

/** What the last failed attempt of an operation ran into: it picks the hint of the final error. */
type Failure = "unreachable" | "fenced" | "not-owner" | "map-behind" | "other";

export class ShardClient {
  private table?: RoutingTable;
  /** An agent said the map moved on: reload it before the next lookup (the old one still routes). */
  private stale = false;
  /** Why the last reload of a stale map failed (the map in hand was kept); cleared by a reload. */
  private storeError?: string;
  private segmenter?: Segmenter;
  private readonly rpc: AgentRpc;
  /** Counters for tests and diagnostics (`duplicates`: writes an agent had already applied). */
  readonly stats = { requests: 0, retries: 0, redirects: 0, refreshes: 0, duplicates: 0 };
  /** The first 8 bytes of this client's write ids (random: no two clients share them in practice). */
  private readonly clientId = randomBytes(8);
  private writeSeq = 0;

  constructor(private readonly opts: ShardClientOptions) {
    const zone = opts.originZone;
    // checked here: a name that is not a header value would fail every attempt as if the agent were down
    if (zone !== undefined && zone !== "" && !ZONE_NAME.test(zone)) {
      throw new UsageError(`the origin zone ${JSON.stringify(zone)} is not a zone name`, {
        hint: "zones are named by 1-32 of a-z, 0-9, _ and - (starting with a letter or digit), as in the config's zones",
      });
    }
    if (opts.deadlineMs !== undefined && !(opts.deadlineMs > 0)) {
      throw new UsageError(`deadlineMs must be a positive number of milliseconds, not ${opts.deadlineMs}`);
    }
    // an operation ends at its deadline (see attempt); the request it gave up on is closed a deadline later at most
    const timeoutMs = Math.min(10_000, this.deadlineMs());
    this.rpc = new AgentRpc({ token: opts.token, maxSockets: opts.maxSockets, timeoutMs });
  }

  private deadlineMs(): number {
    return this.opts.deadlineMs ?? 10_000;
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
    this.stale = false;
    this.storeError = undefined;
    if (!this.table || vm.version !== this.table.version || vm.map !== this.table.map) {
      this.table = new RoutingTable(vm);
      if (!this.segmenter || this.segmenter.segmentCount !== vm.map.segmentCount) {
        this.segmenter = new Segmenter(vm.map.segmentCount, this.opts.maxKeyBytes ?? 1024);
      }
    }
    return this.table;
  }

  /**
   * The map to route by: the first one is loaded (its errors are the caller's); a map marked stale
   * is reloaded, and kept when the store cannot be read now (its old owners redirect).
   */
  private async currentTable(): Promise<RoutingTable> {
    if (this.table && !this.stale) return this.table;
    try {
      return await this.refresh();
    } catch (err) {
      if (!this.table || err instanceof PreconditionError) throw err;
      this.storeError = (err as Error).message;
      return this.table;
    }
  }

  private async route(key: string): Promise<Target> {
    const table = await this.currentTable();
    const shard = table.shardOf(this.segmenter!.segmentOf(key));
    const node = table.node(shard.node);
    if (!node)
      throw new UserError(`the location map names node ${shard.node} for ${shard.id} but does not list it`);
    // a map without the owner's address cannot be served by waiting: say so at once
    if (!node.address) {
      throw new PreconditionError(
        `the location map gives node ${node.id} (the owner of ${shard.id}) no address`,
        {
          hint:
            "give the map its agents' addresses before storing data: `shardctl init --force --nodes " +
            "ID=HOST:PORT@ZONE,…`, or start a local cluster with `shardctl up --local`",
        },
      );
    }
    try {
      splitAddress(node.address);
    } catch {
      throw new UserError(
        `the location map gives node ${node.id} (the owner of ${shard.id}) the address ` +
          `${JSON.stringify(node.address)}, which is not HOST:PORT`,
        { hint: "correct the node's address in the location map (`shardctl nodes` lists them)" },
      );
    }
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
    const deadline = Date.now() + this.deadlineMs();
    const op: Operation = { method, shardId: "", attempts: 0, last: "", failure: "other", inDoubt: false };
    let override: Target | undefined;
    /**
     * The agents one chain of redirects went through since the map was asked: at most
     * MAX_REDIRECT_HOPS redirects, and none back to an agent already asked (a cycle).
     */
    let chain: string[] = [];
    for (;;) {
      const target = override ?? (await this.route(key));
      if (!override) chain = [target.address];
      override = undefined;
      op.shardId = target.shardId;
      const headers: Record<string, string> = { "x-shard-epoch": String(target.epoch) };
      if (this.opts.originZone) headers["x-origin-zone"] = this.opts.originZone;
      if (body) headers["content-type"] = "application/octet-stream";
      // the same id on every attempt: the agent applies the write once, whichever attempt arrives
      if (writeId) headers["x-write-id"] = writeId;
      let res: AgentResponse | undefined;
      this.stats.requests++;
      op.attempts++;
      try {
        res = await this.attempt(
          target.address,
          method,
          keyPath(target.shardId, key),
          headers,
          body,
          deadline,
        );
      } catch (err) {
        const cut = err instanceof DeadlineError;
        if (cut && op.settled) {
          // cut off by this client's own deadline: the previous attempt's outcome still says what went wrong
          op.cutOff = target.address;
        } else {
          op.last = `${target.address} unreachable: ${(err as Error).message}`;
          op.failure = "unreachable";
          op.settled = !cut;
          op.cutOff = undefined;
        }
        // unless no connection was made, the request may have reached the agent before it failed
        const connected = cut
          ? (err as DeadlineError).connected
          : !NOT_CONNECTED.has((err as NodeJS.ErrnoException).code ?? "");
        if (writeId && connected) op.inDoubt = true;
      }
      if (res) {
        if (res.status === 200) return res;
        op.settled = true;
        op.cutOff = undefined;
        const info = parseError(res);
        op.last = `${target.address} answered ${res.status} ${info.error}: ${info.message}`;
        op.failure = failureOf(res.status, info.error);
        switch (res.status) {
          case 404:
            if (info.error === "key-not-found") return null;
            break; // unknown-shard: the map moved on; refresh below
          case 421:
            this.stale = true; // reload the map on the next lookup
            if (info.redirect) {
              const next = info.redirect.address;
              const cycle = chain.includes(next);
              chain.push(next);
              if (cycle) {
                op.cycle = chain.join(" → ");
              } else if (chain.length - 1 <= MAX_REDIRECT_HOPS) {
                this.stats.redirects++;
                override = { address: next, shardId: target.shardId, epoch: info.redirect.epoch };
                continue;
              }
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
      // no retry that could end before the deadline: give up now rather than sleep into it
      const delay = this.backoff(op.attempts - 1);
      if (Date.now() + delay >= deadline) throw this.gaveUp(op);
      this.stats.retries++;
      await sleep(delay);
      this.stale = true;
    }
  }

  /** The delay before retry n (from 0): exponential with jitter (× 0.5–1), capped. */
  private backoff(n: number): number {
    const cap = Math.min(this.opts.maxBackoffMs ?? 1000, (this.opts.baseBackoffMs ?? 20) * 2 ** n);
    return cap * (0.5 + Math.random() / 2);
  }

  /**
   * One request, given up on at the deadline. An agent that read a write before that may still
   * apply it; the write id keeps a retry of it from being applied again.
   */
  private attempt(
    address: string,
    method: string,
    path: string,
    headers: Record<string, string>,
    body: Buffer | undefined,
    deadline: number,
  ): Promise<AgentResponse> {
    // a request cut off before it had a connection is aborted, so it never reaches the agent: that
    // write is not in doubt
    let connected = false;
    const abort = new AbortController();
    const request = this.rpc.request(address, method, path, {
      headers,
      body,
      onConnect: () => (connected = true),
      signal: abort.signal,
    });
    request.catch(() => {}); // settles after the race was lost: not an unhandled rejection
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          if (!connected) abort.abort();
          reject(
            new DeadlineError(`no answer within the client's deadline (${this.deadlineMs()} ms)`, connected),
          );
        },
        Math.max(0, deadline - Date.now()),
      );
    });
    return Promise.race([request, late]).finally(() => clearTimeout(timer));
  }

  /** The error after the deadline: the last answer, and a hint that fits it. */
  private gaveUp(op: Operation): UserError {
    const attempts = `${op.attempts} attempt${op.attempts === 1 ? "" : "s"}`;
    let message = `gave up on ${op.method} after ${attempts} (deadline ${this.deadlineMs()} ms): ${op.last}`;
    if (op.cycle && op.failure === "not-owner") message += ` (the agents redirect in a cycle: ${op.cycle})`;
    if (op.cutOff) {
      message += `; the last attempt, to ${op.cutOff}, had no answer within the client's deadline`;
    }
    if (this.storeError) message += `; the location map could not be reloaded: ${this.storeError}`;
    if (op.inDoubt) {
      message +=
        "; the write may have been applied (an attempt's answer was lost): read the key before writing it again, " +
        "or retry it with the same write id (applied at most once)";
    }
    return new UserError(message, { hint: GIVE_UP_HINTS[op.failure](op.shardId) });
  }

  close(): void {
    this.rpc.close();
  }
}

/** An attempt given up on at the operation's deadline (once connected, the agent may still act on it). */
class DeadlineError extends Error {
  constructor(
    message: string,
    readonly connected: boolean,
  ) {
    super(message);
  }
}

interface Operation {
  method: string;
  shardId: string;
  attempts: number;
  /** The last failure, for the error: "<address> answered <status> <code>: <message>" or unreachable. */
  last: string;
  failure: Failure;
  /** The last cycle of redirects seen ("A → B → A"), never followed round. */
  cycle?: string;
  /** A write attempt failed after it may have reached the agent. */
  inDoubt: boolean;
  /** The last attempt ended by itself (an answer, or a transport error): `last` and `failure` say how. */
  settled?: boolean;
  /** The agent the attempt after that one was sent to, when the deadline cut it off. */
  cutOff?: string;
}

function failureOf(status: number, error: string): Failure {
  if (status === 503) return error === "fenced" ? "fenced" : "unreachable";
  if (status === 421) return "not-owner";
  if (status === 409 || (status === 404 && error === "unknown-shard")) return "map-behind";
  return "other";
}

const RECOVER =
  "`shardctl migrations` lists the moves; `shardctl migrations --recover` finishes one whose coordinator died";

const GIVE_UP_HINTS: Record<Failure, (shardId: string) => string> = {
  unreachable: () => "check that the agents are up (`shardctl up --local` starts a local cluster)",
  fenced: (id) =>
    `shard ${id} stayed fenced: a migration is cutting it over, or one stopped mid-way; ${RECOVER}`,
  "not-owner": (id) =>
    `the agents and the location map disagree on who owns shard ${id} (\`shardctl shards\` shows the map); ${RECOVER}`,
  "map-behind": (id) =>
    `the location map is behind the agents for shard ${id} (\`shardctl shards\` shows the map); ${RECOVER}`,
  other: () => "see the agent's log for the refused request",
};

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
