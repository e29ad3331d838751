/**
 * The routing client for applications. It caches the location map (a
 * RoutingTable from the LocationStore), hashes each key to its segment and
 * shard, and sends the request to the shard's owner with the shard's epoch and
 * the client's origin zone. It then reacts to what the agent says:
 *
 * - 421 not-owner with a redirect hint → retries at the hinted owner and
 *   epoch (at most a few hops), and refreshes its map (keeping the one in
 *   hand while the store cannot be read, or is slow to answer);
 * - agents that redirect in a cycle → one more try from the map read again
 *   (it may have been behind), then a RedirectCycleError at once: waiting
 *   does not end a cycle, someone has to make one agent own the shard;
 * - 409 stale-epoch / wrong-shard, 404 unknown-shard → refreshes its map
 *   and retries (with backoff while the map has not caught up);
 * - 503 fenced or not-serving (a migration cutting over) or an unreachable
 *   agent → exponential backoff with jitter, map refresh, retry until the
 *   deadline.
 *
 * The map it routes by never goes back to an older version: reads of the
 * store may answer out of order (two requests refreshing at once, a Consul
 * read that was slow), and a newer map is what the agents follow.
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
import { ExitCode, PreconditionError, UsageError, UserError } from "../errors.js";
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

/** One agent of a chain of redirects: the node id (from the map or the redirect hint) and its address. */
export interface Hop {
  node: string;
  address: string;
}

/**
 * The agents redirect a shard round a cycle, each naming another as its owner: no agent serves
 * it, and retrying will not change that. Exit 3 (nothing was written), or 1 when a write's earlier
 * attempt may have reached an agent before the cycle was found.
 */
export class RedirectCycleError extends UserError {
  constructor(
    message: string,
    readonly shardId: string,
    /** The chain that came round, its last hop an agent already asked. */
    readonly hops: Hop[],
    opts: { hint: string; inDoubt: boolean },
  ) {
    super(message, { hint: opts.hint, exitCode: opts.inDoubt ? ExitCode.Failed : ExitCode.Precondition });
    this.name = "RedirectCycleError";
  }
}

export interface GetResult {
  value: Buffer;
  lsn: number;
  timestamp: number;
}

interface Target {
  node: string;
  address: string;
  shardId: string;
  epoch: number;
}

/** A map to route by: the table, and the segmenter for its segment count. */
interface Routing {
  table: RoutingTable;
  segmenter: Segmenter;
}

const MAX_REDIRECT_HOPS = 3;
/**
 * How long a lookup waits for a reload of a stale map before it routes by the map in hand (at most
 * half the time the operation has left): its old owners redirect, and a reload that comes later is
 * still taken by the lookups after it.
 */
const RELOAD_WAIT_MS = 1000;
/** The zone names a config may hold (src/config.ts), so the only ones an agent counts. */
const ZONE_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/** Transport errors that mean the request never left this machine: a write that met them is not in doubt. */
const NOT_CONNECTED = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"]);

/** What the last failed attempt of an operation ran into: it picks the hint of the final error. */
type Failure =
  "unreachable" | "fenced" | "not-serving" | "shutting-down" | "not-owner" | "map-behind" | "other";

export class ShardClient {
  /** The newest map read so far: a read that answers later with an older version does not replace it. */
  private routing?: Routing;
  /**
   * Counts the times an agent said the map moved on (and calls of refresh): a map read that started
   * before the latest may be behind. The map in hand is stale while `loadedSeq` is below it.
   */
  private staleSeq = 0;
  /** The `staleSeq` at the start of the latest read of the store that answered. */
  private loadedSeq = 0;
  /** The read of the store in flight, if any: lookups share it rather than start one each. */
  private loading?: { seq: number; done: Promise<Routing> };
  /** Why the last reload of a stale map failed (the map in hand was kept); cleared by a reload. */
  private storeError?: string;
  private readonly rpc: AgentRpc;
  /** Counters for tests and diagnostics (`duplicates`: writes an agent had already applied). */
  readonly stats = { requests: 0, retries: 0, redirects: 0, refreshes: 0, duplicates: 0 };
  /** The first 8 bytes of this client's write ids (random: no two clients share them in practice). */
  private readonly clientId = randomBytes(8);
  private writeSeq = 0;
  /** close() calls so far: an operation started before one gives up at its next attempt. */
  private closes = 0;

  constructor(private readonly opts: ShardClientOptions) {
    const zone = opts.originZone;
    // checked here: a name that is not a header value would fail every attempt as if the agent were down
    if (zone !== undefined && zone !== "" && !ZONE_NAME.test(zone)) {
      throw new UsageError(`the origin zone ${JSON.stringify(zone)} is not a zone name`, {
        hint: "zones are named by 1-32 of a-z, 0-9, _ and - (starting with a letter or digit), as in the config's zones",
      });
    }
    if (opts.deadlineMs !== undefined && !(opts.deadlineMs > 0 && opts.deadlineMs <= MAX_DEADLINE_MS)) {
      // a timer longer than 2^31 - 1 ms fires after 1 ms in Node: every attempt would be cut off at once
      throw new UsageError(
        `deadlineMs must be a positive number of milliseconds up to ${MAX_DEADLINE_MS} (24.8 days), not ${opts.deadlineMs}`,
      );
    }
    // an operation ends at its deadline (see attempt); the request it gave up on is closed a deadline later at most
    const timeoutMs = Math.min(10_000, this.deadlineMs());
    this.rpc = new AgentRpc({ token: opts.token, maxSockets: opts.maxSockets, timeoutMs });
  }

  private deadlineMs(): number {
    return this.opts.deadlineMs ?? 10_000;
  }

  async get(key: string): Promise<GetResult | null> {
    const answer = await this.send(key, "GET");
    if (answer === null) return null;
    return getAnswer({ key, ...answer.target }, answer.res);
  }

  async put(key: string, value: Buffer | string, opts: WriteOptions = {}): Promise<PutResult> {
    const body = typeof value === "string" ? Buffer.from(value) : value;
    const max = this.opts.maxValueBytes;
    if (max !== undefined && body.length > max) {
      throw new UsageError(`the value is ${body.length} bytes; the limit is ${max} (limits.maxValueBytes)`);
    }
    const writeId = this.writeIdFor(opts);
    const { res, target } = (await this.send(key, "PUT", body, writeId))!;
    return this.counted(writeAnswer("PUT", { key, ...target, writeId }, res));
  }

  async delete(key: string, opts: WriteOptions = {}): Promise<DeleteResult> {
    const writeId = this.writeIdFor(opts);
    const { res, target } = (await this.send(key, "DELETE", undefined, writeId))!;
    return this.counted(writeAnswer("DELETE", { key, ...target, writeId }, res));
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

  private counted<T extends PutResult>(r: T): T {
    if (r.duplicate) this.stats.duplicates++;
    return r;
  }

  /**
   * Reads the map from the store now (not joining a read that started before this call). Returns
   * the newest map read so far: a read that answers with an older version than the one in hand
   * (it was slow, or a store replica is behind) leaves it in hand. Versions only rise in a store,
   * so a client that outlives a store re-created from nothing must be restarted.
   */
  async refresh(): Promise<RoutingTable> {
    this.staleSeq++;
    return (await this.read(this.staleSeq)).table;
  }

  /** An agent said the map moved on: read it again before the next lookup (the old one still routes). */
  private markStale(): void {
    this.staleSeq++;
  }

  /** One read of the store, or the one in flight when it started at `minSeq` or later. */
  private read(minSeq: number): Promise<Routing> {
    if (this.loading && this.loading.seq >= minSeq) return this.loading.done;
    const seq = this.staleSeq;
    this.stats.refreshes++;
    const done = this.opts.store.load().then((vm) => {
      if (!vm) {
        throw new PreconditionError("the location store holds no map yet", {
          hint: "start a local cluster with `shardctl up --local`, or initialise the store",
        });
      }
      this.loadedSeq = Math.max(this.loadedSeq, seq);
      this.storeError = undefined;
      const held = this.routing;
      if (!held || vm.version > held.table.version) {
        const segmenter =
          held && held.segmenter.segmentCount === vm.map.segmentCount
            ? held.segmenter
            : new Segmenter(vm.map.segmentCount, this.opts.maxKeyBytes ?? 1024);
        this.routing = { table: new RoutingTable(vm), segmenter };
      }
      return this.routing!;
    });
    const entry = { seq, done };
    this.loading = entry;
    const clear = () => {
      if (this.loading === entry) this.loading = undefined;
    };
    done.then(clear, clear);
    return done;
  }

  /**
   * The map to route by. The first one is waited for until the deadline (its errors are the
   * caller's). A map marked stale is read again, but waited for only a while: the map in hand is
   * kept when the store cannot be read now, or is slow (its old owners redirect).
   */
  private async currentRouting(deadline: number): Promise<Routing> {
    const held = this.routing;
    if (held && this.loadedSeq >= this.staleSeq) return held;
    // any read in flight will do: one that started before the map was marked stale leaves it stale,
    // so the lookup after it reads again, and no more than one read is ever waited for
    const reading = this.read(0);
    if (!held) {
      const first = await within(reading, deadline - performance.now());
      if (first === TIMED_OUT) {
        throw new UserError(
          `the location store did not answer within the client's deadline (${this.deadlineMs()} ms): ` +
            "no map to route by",
          { hint: "check that the store answers: `shardctl status` reads the map the same way" },
        );
      }
      return first;
    }
    const waitMs = Math.max(0, Math.min(RELOAD_WAIT_MS, (deadline - performance.now()) / 2));
    try {
      const next = await within(reading, waitMs);
      if (next !== TIMED_OUT) return next;
      this.storeError = `the location store did not answer within ${Math.round(waitMs)} ms`;
    } catch (err) {
      if (err instanceof PreconditionError) throw err;
      this.storeError = (err as Error).message;
    }
    return this.routing ?? held;
  }

  private async route(key: string, deadline: number): Promise<Target> {
    const { table, segmenter } = await this.currentRouting(deadline);
    const shard = table.shardOf(segmenter.segmentOf(key));
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
    return { node: node.id, address: node.address, shardId: shard.id, epoch: shard.epoch };
  }

  /**
   * Sends one key request, following the agent's answers: the 200 answer and the agent that gave
   * it; null for a 404 key-not-found.
   */
  private async send(
    key: string,
    method: "GET" | "PUT" | "DELETE",
    body?: Buffer,
    writeId?: string,
  ): Promise<{ res: AgentResponse; target: Target } | null> {
    validateKey(key, this.opts.maxKeyBytes ?? 1024);
    const deadline = performance.now() + this.deadlineMs();
    const generation = this.closes;
    const op: Operation = {
      method,
      writeId,
      shardId: "",
      address: "",
      attempts: 0,
      last: "",
      failure: "other",
      inDoubt: false,
      cycles: 0,
    };
    let override: Target | undefined;
    /**
     * The agents one chain of redirects went through since the map was asked: at most
     * MAX_REDIRECT_HOPS redirects, and none back to an agent already asked (a cycle).
     */
    let chain: Hop[] = [];
    for (;;) {
      if (this.closes !== generation) throw this.closedError(op);
      const target = override ?? (await this.route(key, deadline));
      if (!override) chain = [{ node: target.node, address: target.address }];
      override = undefined;
      op.shardId = target.shardId;
      op.retryAfterMs = undefined;
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
        if (res.status === 200) return { res, target };
        op.settled = true;
        op.cutOff = undefined;
        op.address = target.address;
        const info = parseErrorAnswer(res);
        op.last = `${target.address} answered ${res.status} ${info.error}: ${info.message}`;
        op.failure = failureOf(res.status, info.error);
        switch (res.status) {
          case 404:
            if (info.error === "key-not-found") return null;
            break; // unknown-shard: the map moved on; refresh below
          case 421:
            this.markStale(); // reload the map on the next lookup
            if (info.redirect) {
              const next = { node: info.redirect.node, address: info.redirect.address };
              const cycle = chain.some((h) => h.address === next.address);
              chain.push(next);
              if (cycle) {
                // the chain began at the map in hand, which may be behind the store (its owner may be
                // an agent outside the cycle): read it again and try once more, at once. A second
                // cycle is no transient: no agent serves the shard until someone makes one own it
                if (++op.cycles === 1) continue;
                throw this.cycleError(op, chain);
              }
              if (chain.length - 1 <= MAX_REDIRECT_HOPS) {
                this.stats.redirects++;
                override = {
                  node: next.node,
                  address: next.address,
                  shardId: target.shardId,
                  epoch: info.redirect.epoch,
                };
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
            // the write id names another write there (nothing was written): no retry changes that
            if (info.error === "write-id-reused") {
              throw new UsageError(`the agent refused the write: ${info.message}`, {
                hint: "a write id names one write (its retries repeat it); leave --write-id out, and the client makes a fresh one",
              });
            }
            break; // stale-epoch, wrong-shard: the map moved on; refresh below
          case 503:
            // a stopping agent says when to come back (Retry-After: 1): sooner is refused again. A
            // fence, or a target not serving yet, lasts a migration's write pause (tens of ms): the
            // whole second of their Retry-After would stall every write for 20 times that, so they
            // are retried on the backoff (20 ms, doubling)
            op.retryAfterMs = info.error === "shutting-down" ? retryAfterMs(res.headers) : undefined;
            break;
          default:
            if (res.status >= 500 && info.error === "shard-failed") {
              // this write's own flush failed: its entries may have reached the disk, and a restart's
              // recovery keeps them (a shard failed before it refuses it unwritten)
              if (writeId && /^this write was not acknowledged/.test(info.message ?? "")) op.inDoubt = true;
              let message = `shard ${target.shardId} on ${target.address} is refused by its agent: ${info.message}`;
              if (op.inDoubt) message += inDoubtText(op);
              throw new UserError(message);
            }
        }
      }
      // no retry that could end before the deadline: give up now rather than sleep into it
      const base = this.backoff(op.attempts - 1);
      if (performance.now() + base >= deadline) throw this.gaveUp(op);
      // the agent's retry-after is the least wait, but no later than leaves room for a last attempt
      // before the deadline (a short deadline still tries again rather than give up on a 1 s hint)
      const delay = Math.max(base, Math.min(op.retryAfterMs ?? 0, deadline - performance.now() - base));
      this.stats.retries++;
      await sleep(delay);
      this.markStale();
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
  private async attempt(
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
    const answer = await within(request, deadline - performance.now());
    if (answer !== TIMED_OUT) return answer;
    if (!connected) abort.abort();
    throw new DeadlineError(`no answer within the client's deadline (${this.deadlineMs()} ms)`, connected);
  }

  /** The error after the deadline: the last answer, and a hint that fits it. */
  private gaveUp(op: Operation): UserError {
    const attempts = `${op.attempts} attempt${op.attempts === 1 ? "" : "s"}`;
    let message = `gave up on ${op.method} after ${attempts} (deadline ${this.deadlineMs()} ms): ${op.last}`;
    if (op.cutOff) {
      message += `; the last attempt, to ${op.cutOff}, had no answer within the client's deadline`;
    }
    if (this.storeError) message += `; the location map could not be reloaded: ${this.storeError}`;
    if (op.inDoubt) {
      message += inDoubtText(op);
    }
    return new UserError(message, { hint: GIVE_UP_HINTS[op.failure](op.shardId, op.address) });
  }

  /** The error for a redirect cycle, found twice: before the deadline, as waiting will not end it. */
  private cycleError(op: Operation, chain: Hop[]): RedirectCycleError {
    const hops = chain.map((h) => `${h.node} at ${h.address}`).join(" → ");
    let message =
      `gave up on ${op.method} at once: no agent serves shard ${op.shardId}, ` +
      `the agents redirect in a cycle: ${hops} (each says another owns it)`;
    if (this.storeError) message += `; the location map could not be reloaded: ${this.storeError}`;
    if (op.inDoubt) {
      message +=
        "; the write may have been applied (an earlier attempt's answer was lost): read the key before " +
        `writing it again, or retry it with the same write id, ${op.writeId} (applied at most once)`;
    } else if (op.method !== "GET") {
      message += "; nothing was written";
    }
    return new RedirectCycleError(message, op.shardId, chain, {
      inDoubt: op.inDoubt,
      hint:
        `the agents and the location map disagree on who owns shard ${op.shardId}, and retrying will not ` +
        "help until one agent owns it: `shardctl status` and `shardctl shards` show the map and the owner " +
        `it names; ${RECOVER}`,
    });
  }

  /**
   * Closes the connections. Operations in flight end with an error at their next attempt (a
   * write's says whether it may have been applied, with its write id); later calls open new ones.
   */
  close(): void {
    this.closes++;
    this.rpc.close();
  }

  private closedError(op: Operation): UserError {
    let message = `${op.method} stopped after ${op.attempts} attempt${op.attempts === 1 ? "" : "s"}: the client was closed`;
    if (op.inDoubt) {
      message += inDoubtText(op);
    } else if (op.method !== "GET") {
      message += "; nothing was written";
    }
    return new UserError(message);
  }
}

/** What an error adds for a write that may have been applied: how to check it, or retry it safely. */
function inDoubtText(op: Operation): string {
  return (
    "; the write may have been applied (an attempt's answer was lost): read the key before writing it again, " +
    `or retry it with the same write id, ${op.writeId} (applied at most once)`
  );
}

/** The longest deadline: Node's timers hold at most 2^31 - 1 ms (a longer one fires after 1 ms). */
export const MAX_DEADLINE_MS = 2 ** 31 - 1;

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
  /** The write id sent on every attempt (32 hex digits; none for a get): the errors name it for a retry. */
  writeId?: string;
  /** The last answer's retry-after (a 503's), when sane: the least wait before the next attempt. */
  retryAfterMs?: number;
  shardId: string;
  /** The agent of the last answer. */
  address: string;
  attempts: number;
  /** The last failure, for the error: "<address> answered <status> <code>: <message>" or unreachable. */
  last: string;
  failure: Failure;
  /** Redirect cycles met (each chain stops where it comes round); the second ends the operation. */
  cycles: number;
  /** A write attempt failed after it may have reached the agent. */
  inDoubt: boolean;
  /** The last attempt ended by itself (an answer, or a transport error): `last` and `failure` say how. */
  settled?: boolean;
  /** The agent the attempt after that one was sent to, when the deadline cut it off. */
  cutOff?: string;
}

function failureOf(status: number, error: string): Failure {
  if (status === 503) {
    return error === "fenced" || error === "not-serving" || error === "shutting-down" ? error : "unreachable";
  }
  if (status === 421) return "not-owner";
  if (status === 409 || (status === 404 && error === "unknown-shard")) return "map-behind";
  return "other";
}

const RECOVER =
  "`shardctl migrations` lists the moves; `shardctl migrations --recover` finishes one whose coordinator died";

const GIVE_UP_HINTS: Record<Failure, (shardId: string, address: string) => string> = {
  unreachable: () =>
    "check that the agents are up: `shardctl nodes` lists them; `shardctl up --local` starts a local cluster's, " +
    "`shardctl node start <id>` a deployed one",
  fenced: (id) =>
    `shard ${id} stayed fenced: a migration is cutting it over, or one stopped mid-way; ${RECOVER}`,
  // the agent is up and answered: it holds a copy a migration has not activated (yet)
  "not-serving": (id, address) =>
    `shard ${id} is a migration target at ${address} that serves nothing yet: a migration is ` +
    `committing it, or one stopped mid-way; ${RECOVER}`,
  "not-owner": (id) =>
    `the agents and the location map disagree on who owns shard ${id} (\`shardctl shards\` shows the map); ${RECOVER}`,
  "map-behind": (id) =>
    `the location map is behind the agents for shard ${id} (\`shardctl shards\` shows the map); ${RECOVER}`,
  // the agent is up but stopping (a restart, a deploy): the shard is served again once it is back, or moved
  "shutting-down": (_id, address) =>
    `the agent at ${address} is stopping (it answered 503 shutting-down): retry once it is back, ` +
    "or see `shardctl nodes` for the cluster's agents",
  other: () => "see the agent's log for the refused request",
};

/** The hint of the error given up with after the last answer was `status` `error` (pure). */
export function giveUpHint(status: number, error: string, shardId: string, address: string): string {
  return GIVE_UP_HINTS[failureOf(status, error)](shardId, address);
}

/** Where a write went, for its errors. */
export interface WriteSite {
  key: string;
  address: string;
  shardId: string;
  /** The write id it was sent with (32 hex digits), named for a retry. */
  writeId?: string;
}

/**
 * The outcome of a write its agent answered 200 (pure: no I/O). A body that is not what an agent
 * sends (`{lsn, epoch}`, `{lsn, existed, epoch}`) is an error naming the agent, not a crash: the
 * write may have been applied (the 200 says so, if an agent sent it), but its outcome cannot be read.
 */
export function writeAnswer(method: "PUT", site: WriteSite, res: AgentResponse): PutResult;
export function writeAnswer(method: "DELETE", site: WriteSite, res: AgentResponse): DeleteResult;
export function writeAnswer(method: "PUT" | "DELETE", site: WriteSite, res: AgentResponse): PutResult {
  const outcome = method === "PUT" ? "its LSN" : "its LSN and whether the key existed";
  const bad = (why: string) =>
    new UserError(
      `the agent at ${site.address} answered 200 to ${method} of ${shownKey(site.key)} ` +
        `(shard ${site.shardId}), but its body is ${why}: the write may have been applied ` +
        `(an agent answers 200 once it is), and ${outcome} cannot be read`,
      {
        hint:
          "read the key (`shardctl get`) before writing it again, or retry it with the same write id" +
          (site.writeId ? `, ${site.writeId}` : "") +
          " (applied at most once); and check that the map's address for the node is this cluster's " +
          "agent, of this version (`shardctl nodes`)",
      },
    );
  const text = res.body.toString("utf8");
  if (text.length === 0) throw bad("empty");
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    throw bad(`not JSON: ${quoted(text)}`);
  }
  if (j === null || typeof j !== "object" || Array.isArray(j))
    throw bad(`not a JSON object: ${quoted(text)}`);
  const { lsn, existed } = j as Record<string, unknown>;
  if (lsn === undefined) throw bad(`a JSON object with no lsn: ${quoted(text)}`);
  if (typeof lsn !== "number" || !Number.isSafeInteger(lsn) || lsn < 0) {
    throw bad(`a JSON object whose lsn ${JSON.stringify(lsn).slice(0, 200)} is not a non-negative integer`);
  }
  if (method === "DELETE" && typeof existed !== "boolean") {
    throw bad(`a JSON object whose existed is not true or false: ${quoted(text)}`);
  }
  const r: PutResult | DeleteResult = method === "PUT" ? { lsn } : { lsn, existed: existed as boolean };
  if (res.headers["x-write-duplicate"] === "true") r.duplicate = true;
  return r;
}

/** At most the first 200 characters of `text`, as a JSON string (control characters escaped). */
function quoted(text: string): string {
  return text.length > 200 ? `${JSON.stringify(text.slice(0, 200))}…` : JSON.stringify(text);
}

/** A key as an error names it: as it is when plain, else quoted (it may hold control characters). */
function shownKey(key: string): string {
  return /^[\x21-\x7e]{1,200}$/.test(key) ? key : quoted(key);
}

interface ErrorInfo {
  error: string;
  message: string;
  epoch?: number;
  redirect?: { node: string; address: string; epoch: number } | null;
}

/**
 * An agent's error answer (pure). A redirect hint that is not `{node, address: HOST:PORT, epoch}`
 * (an integer epoch) is dropped, and the message says so: followed, a bad address would fail as an
 * unreachable agent and leave a write in doubt that was never sent; without it the client reloads
 * the map and retries, and the error it may give up with shows the answer.
 */
export function parseErrorAnswer(res: AgentResponse): ErrorInfo {
  let j: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(res.body.toString("utf8"));
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
      throw new Error("not an object");
    j = parsed as Record<string, unknown>;
  } catch {
    return { error: "unknown", message: res.body.toString("utf8").slice(0, 200) };
  }
  const info: ErrorInfo = {
    error: String(j.error ?? "unknown"),
    message: String(j.message ?? ""),
  };
  if (typeof j.epoch === "number") info.epoch = j.epoch;
  const hint = j.redirect;
  if (hint === undefined || hint === null) return info;
  const redirect = redirectHint(hint);
  if (redirect) info.redirect = redirect;
  else info.message += ` (its malformed redirect hint ${quoted(JSON.stringify(hint) ?? "")} was ignored)`;
  return info;
}

/** A redirect hint an agent sends: node, HOST:PORT as its release endpoint accepts it, an integer epoch. */
function redirectHint(hint: unknown): ErrorInfo["redirect"] {
  if (hint === null || typeof hint !== "object" || Array.isArray(hint)) return undefined;
  const { node, address, epoch } = hint as Record<string, unknown>;
  if (typeof node !== "string" || node.length === 0) return undefined;
  if (typeof address !== "string" || !/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(address))
    return undefined;
  try {
    splitAddress(address); // the port is 1-65535
  } catch {
    return undefined;
  }
  if (typeof epoch !== "number" || !Number.isSafeInteger(epoch) || epoch < 0) return undefined;
  return { node, address, epoch };
}

/** The longest retry-after taken (s): a longer one is not what an agent sends, and is ignored. */
const MAX_RETRY_AFTER_S = 60;

/** A 503's retry-after in ms when it is whole seconds up to a minute (pure); else undefined. */
export function retryAfterMs(headers: AgentResponse["headers"]): number | undefined {
  const v = headers["retry-after"];
  if (typeof v !== "string" || !/^\d{1,5}$/.test(v)) return undefined;
  const s = Number(v);
  return s <= MAX_RETRY_AFTER_S ? s * 1000 : undefined;
}

/**
 * The value of a key its agent answered 200 to a GET (pure). `x-lsn` and `x-timestamp` are
 * non-negative integers from an agent; anything else is an error naming the agent, not a NaN.
 */
export function getAnswer(site: WriteSite, res: AgentResponse): GetResult {
  const header = (name: "x-lsn" | "x-timestamp"): number => {
    const v = res.headers[name];
    const n = typeof v === "string" && /^\d{1,16}$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n)) {
      throw new UserError(
        `the agent at ${site.address} answered 200 to GET of ${shownKey(site.key)} (shard ${site.shardId}), ` +
          `but its ${name} header is ${v === undefined ? "missing" : quoted(String(v))}, not a non-negative ` +
          "integer: the answer is not an agent's, so its value is not trusted",
        {
          hint: "check that the map's address for the node is this cluster's agent, of this version (`shardctl nodes`)",
        },
      );
    }
    return n;
  };
  return { value: res.body, lsn: header("x-lsn"), timestamp: header("x-timestamp") };
}

const TIMED_OUT = Symbol("timed out");

/** `p`, or TIMED_OUT when it has not settled within `ms` (p carries on; its rejection is handled). */
async function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), Math.min(MAX_DEADLINE_MS, Math.max(0, ms)));
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
