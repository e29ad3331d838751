/**
 * The one module that talks HTTP to Consul. Everything else in src/consul
 * calls these typed methods; remote errors are translated here, where the call
 * is made, into UserErrors that say what to do (a 403 names the token and the
 * prefix, a refused connection names CONSUL_HTTP_ADDR).
 *
 * Built on the `consul` npm client (v2): its high-level calls where they fit,
 * its low-level `_get/_put/_delete` for the rest so that every call sees the
 * status and the X-Consul-Index header. Every request has a bounded timeout;
 * blocking queries get `wait` plus Consul's jitter (wait/16) plus a margin.
 */
import Consul from "consul";
import { EventEmitter } from "node:events";
import { UserError } from "../errors.js";
import { checkConsulToken, parseConsulAddr, type ConsulEndpoint } from "./address.js";

export { parseConsulAddr, type ConsulEndpoint } from "./address.js";

export interface ConsulHttpOptions {
  addr: string;
  token?: string;
  /** Key prefix the caller works under; only used to word errors. */
  prefix: string;
  /** Bound on every non-blocking request, ms (default 5000). */
  timeoutMs?: number;
}

export interface KvEntry {
  Key: string;
  Value: string | null;
  CreateIndex: number;
  ModifyIndex: number;
  LockIndex: number;
  Flags: number;
  Session?: string;
}

/** A key's entry decoded to text (null when the key does not exist), with the response's X-Consul-Index. */
export interface KvRead {
  entry: (Omit<KvEntry, "Value"> & { value: string }) | null;
  index: number;
}

export interface KvTreeRead {
  /** `base64`: the value's bytes as Consul holds them, only when asked for (`raw`). */
  entries: (Omit<KvEntry, "Value"> & { value: string; base64?: string })[];
  index: number;
}

export type TxnOp =
  | { verb: "set"; key: string; value: string; encoding?: "base64" }
  | { verb: "cas"; key: string; value: string; index: number }
  | { verb: "check-index"; key: string; index: number }
  | { verb: "check-not-exists"; key: string }
  | { verb: "check-session"; key: string; session: string }
  | { verb: "delete"; key: string }
  | { verb: "delete-cas"; key: string; index: number }
  | { verb: "get"; key: string };

export type TxnResult =
  | { ok: true; results: (Omit<KvEntry, "Value"> & { value: string | null })[] }
  | { ok: false; errors: { opIndex: number; what: string }[] };

export interface SessionInfo {
  ID: string;
  Name: string;
  Node: string;
  TTL: string;
  LockDelay: number;
  Behavior: string;
  CreateIndex: number;
}

export interface ServiceRegistration {
  ID: string;
  Name: string;
  Address: string;
  Port: number;
  Meta: Record<string, string>;
  Check:
    | { HTTP: string; Interval: string; Timeout: string; DeregisterCriticalServiceAfter: string }
    | { TTL: string; Status: "passing"; DeregisterCriticalServiceAfter: string };
}

export interface HealthServiceEntry {
  Node: { Node: string; Address: string };
  Service: {
    ID: string;
    Service: string;
    Address: string;
    Port: number;
    Meta: Record<string, string> | null;
  };
  Checks: { CheckID: string; Status: string; Output: string; ServiceID: string }[];
}

/** Consul's limits (defaults of kv_max_value_size and txn_max_req_len, and the txn op cap). */
export const CONSUL_MAX_VALUE_BYTES = 512 * 1024;
export const CONSUL_MAX_TXN_BYTES = 512 * 1024;
export const CONSUL_MAX_TXN_OPS = 64;

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

interface CallOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** "json" (default) or raw text. */
  text?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** What the call is for, for error messages: "read" or "write". */
  access: "read" | "write";
  /** Key or resource the error message names (defaults to the prefix). */
  what?: string;
}

type PapiRequest = {
  res?: { statusCode: number; headers: Record<string, string | string[] | undefined>; body?: unknown };
  err?: Error & { isTimeout?: boolean; isAbort?: boolean; code?: string };
};
type PapiNext = (err: unknown, value?: unknown, maybe?: unknown) => void;
type PapiCall = (
  opts: Record<string, unknown>,
  cb: (request: PapiRequest, next: PapiNext) => void,
) => Promise<unknown>;

export class AbortedError extends Error {
  constructor() {
    super("aborted");
    this.name = "AbortedError";
  }
}

export class ConsulHttp {
  readonly endpoint: ConsulEndpoint;
  readonly prefix: string;
  readonly timeoutMs: number;
  private readonly token?: string;
  private readonly client: Consul;

  constructor(opts: ConsulHttpOptions) {
    this.endpoint = parseConsulAddr(opts.addr);
    if (opts.token) checkConsulToken(opts.token);
    this.prefix = opts.prefix;
    this.token = opts.token || undefined;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.client = new Consul({
      host: this.endpoint.host,
      port: this.endpoint.port,
      secure: this.endpoint.secure,
      defaults: this.token ? { token: this.token } : undefined,
    });
  }

  get addr(): string {
    return this.endpoint.addr;
  }

  close(): void {
    this.client.destroy();
  }

  // ---- KV ----------------------------------------------------------------

  /** GET one key. `index`/`waitS` make it a blocking query. */
  async kvGet(
    key: string,
    opts: { consistent?: boolean; index?: number; waitS?: number; signal?: AbortSignal } = {},
  ): Promise<KvRead> {
    const blocking = opts.index !== undefined && opts.index > 0;
    const res = await this.call("get", `/kv/${encodeKey(key)}`, {
      access: "read",
      what: key,
      query: {
        consistent: opts.consistent ? "" : undefined,
        index: blocking ? opts.index : undefined,
        wait: blocking ? `${opts.waitS ?? 60}s` : undefined,
      },
      timeoutMs: blocking ? blockingTimeout(opts.waitS ?? 60, this.timeoutMs) : undefined,
      signal: opts.signal,
    });
    this.expectConsul(res);
    const index = indexOf(res);
    if (res.status === 404) return { entry: null, index };
    this.expectOk(res, "read", key);
    const list = res.body as KvEntry[];
    if (!Array.isArray(list) || list.length === 0) return { entry: null, index };
    return { entry: decodeEntry(list[0]), index };
  }

  /** GET a whole subtree in one read (one snapshot of the state store). */
  async kvTree(
    prefix: string,
    opts: { consistent?: boolean; timeoutMs?: number; raw?: boolean } = {},
  ): Promise<KvTreeRead> {
    const res = await this.call("get", `/kv/${encodeKey(prefix)}`, {
      access: "read",
      what: prefix,
      query: { recurse: "", consistent: opts.consistent ? "" : undefined },
      timeoutMs: opts.timeoutMs,
    });
    this.expectConsul(res);
    const index = indexOf(res);
    // Under default_policy deny a token without read sees a filtered (maybe
    // empty) list, not a 403: treat "filtered" as refused, never as "no map".
    if (res.headers["x-consul-results-filtered-by-acls"] === "true") {
      throw this.aclError("read", prefix, "some keys were hidden by ACLs");
    }
    if (res.status === 404) return { entries: [], index };
    this.expectOk(res, "read", prefix);
    const list = res.body as KvEntry[];
    const decode = opts.raw ? (e: KvEntry) => ({ ...decodeEntry(e), base64: e.Value ?? "" }) : decodeEntry;
    return { entries: Array.isArray(list) ? list.map(decode) : [], index };
  }

  /** Plain PUT of one key; returns Consul's true/false (false: a cas or lock was refused). */
  async kvPut(
    key: string,
    value: string,
    query: { cas?: number; acquire?: string; release?: string } = {},
  ): Promise<boolean> {
    if (Buffer.byteLength(value) > CONSUL_MAX_VALUE_BYTES) {
      throw new Error(
        `bug: value for ${key} is ${Buffer.byteLength(value)} bytes, over Consul's 512 KiB limit`,
      );
    }
    const res = await this.call("put", `/kv/${encodeKey(key)}`, {
      access: "write",
      what: key,
      query,
      body: value,
      text: true,
    });
    this.expectOk(res, "write", key);
    return res.body === true || res.body === "true";
  }

  async kvDelete(key: string): Promise<void> {
    const res = await this.call("delete", `/kv/${encodeKey(key)}`, { access: "write", what: key });
    this.expectOk(res, "write", key);
  }

  /**
   * One Consul transaction (at most 64 operations, at most 512 KiB of
   * request). A rolled-back transaction (a failed check or cas) is returned
   * as {ok:false}; ACL refusals and transport errors throw.
   */
  async txn(ops: TxnOp[], opts: { consistent?: boolean } = {}): Promise<TxnResult> {
    if (ops.length === 0 || ops.length > CONSUL_MAX_TXN_OPS) {
      throw new Error(
        `bug: a Consul transaction holds 1 to ${CONSUL_MAX_TXN_OPS} operations, got ${ops.length}`,
      );
    }
    const body = ops.map((op) => ({ KV: toTxnKv(op) }));
    const res = await this.call("put", "/txn", {
      access: ops.every((o) => o.verb === "get") ? "read" : "write",
      body,
      query: { consistent: opts.consistent ? "" : undefined },
    });
    if (res.status === 409) {
      const errs = ((res.body as { Errors?: { OpIndex: number; What: string }[] })?.Errors ?? []).map(
        (e) => ({
          opIndex: e.OpIndex,
          what: e.What,
        }),
      );
      const denied = errs.find((e) => /permission denied/i.test(e.what));
      if (denied) {
        const key = "key" in ops[denied.opIndex] ? ops[denied.opIndex].key : this.prefix;
        throw this.aclError(ops[denied.opIndex].verb === "get" ? "read" : "write", key, denied.what);
      }
      return { ok: false, errors: errs };
    }
    this.expectOk(res, "write", this.prefix);
    const results = ((res.body as { Results?: { KV: KvEntry }[] })?.Results ?? []).map((r) => {
      const e = r.KV;
      return { ...e, value: e.Value == null ? null : Buffer.from(e.Value, "base64").toString("utf8") };
    });
    return { ok: true, results };
  }

  // ---- sessions ----------------------------------------------------------

  async sessionCreate(opts: {
    name: string;
    ttlS: number;
    lockDelayS: number;
    behavior: "release" | "delete";
    /** Service check ids the session is bound to: it is invalidated as soon as one goes critical. */
    serviceChecks?: string[];
  }): Promise<string> {
    const res = await this.call("put", "/session/create", {
      access: "write",
      what: "sessions",
      body: {
        Name: opts.name,
        TTL: `${opts.ttlS}s`,
        LockDelay: `${opts.lockDelayS}s`,
        Behavior: opts.behavior,
        // No node checks: a session bound to serfHealth outlives a killed
        // process on a healthy node. The process's own TTL check (if any)
        // and the session TTL tell us the holder died.
        NodeChecks: [],
        ServiceChecks: (opts.serviceChecks ?? []).map((id) => ({ ID: id })),
      },
    });
    this.expectOk(res, "write", "sessions");
    return (res.body as { ID: string }).ID;
  }

  /** Renews a session; false when Consul no longer knows it (expired or destroyed). */
  async sessionRenew(id: string): Promise<boolean> {
    const res = await this.call("put", `/session/renew/${encodeURIComponent(id)}`, {
      access: "write",
      what: "sessions",
    });
    if (res.status === 404) return false;
    this.expectOk(res, "write", "sessions");
    return Array.isArray(res.body) && res.body.length > 0;
  }

  async sessionDestroy(id: string): Promise<void> {
    const res = await this.call("put", `/session/destroy/${encodeURIComponent(id)}`, {
      access: "write",
      what: "sessions",
    });
    this.expectOk(res, "write", "sessions");
  }

  async sessionInfo(id: string, opts: { consistent?: boolean } = {}): Promise<SessionInfo | null> {
    const res = await this.call("get", `/session/info/${encodeURIComponent(id)}`, {
      access: "read",
      what: "sessions",
      query: { consistent: opts.consistent ? "" : undefined },
    });
    this.expectOk(res, "read", "sessions");
    const list = res.body as SessionInfo[] | null;
    return Array.isArray(list) && list.length ? list[0] : null;
  }

  // ---- services ------------------------------------------------------------

  async serviceRegister(reg: ServiceRegistration): Promise<void> {
    const res = await this.call("put", "/agent/service/register", {
      access: "write",
      what: `service ${reg.Name}`,
      body: reg,
    });
    this.expectOk(res, "write", `service ${reg.Name}`);
  }

  async serviceDeregister(id: string): Promise<void> {
    const res = await this.call("put", `/agent/service/deregister/${encodeURIComponent(id)}`, {
      access: "write",
      what: `service ${id}`,
    });
    if (res.status === 404) return;
    this.expectOk(res, "write", `service ${id}`);
  }

  /**
   * Marks a TTL check passing (the heartbeat of a process-bound check); false
   * when the agent no longer knows the check (it deregistered the service
   * after it stayed critical, or the agent restarted without it).
   */
  async checkPass(checkId: string): Promise<boolean> {
    const res = await this.call("put", `/agent/check/pass/${encodeURIComponent(checkId)}`, {
      access: "write",
      what: `check ${checkId}`,
    });
    if (res.status === 404) return false;
    this.expectOk(res, "write", `check ${checkId}`);
    return true;
  }

  async healthService(name: string): Promise<HealthServiceEntry[]> {
    const res = await this.call("get", `/health/service/${encodeURIComponent(name)}`, {
      access: "read",
      what: `service ${name}`,
    });
    this.expectOk(res, "read", `service ${name}`);
    // a token that may not read the service (or its nodes) sees a filtered list, not a 403: every
    // agent would read as unregistered
    if (res.headers["x-consul-results-filtered-by-acls"] === "true")
      throw new UserError(
        `the token in CONSUL_HTTP_TOKEN may not read service ${name} or the nodes it runs on (Consul hid some of them: ACLs)`,
        {
          hint: `give the token a policy with service "${name}" { policy = "read" } and node_prefix "" { policy = "read" } (see docs/CONSUL.md)`,
        },
      );
    return Array.isArray(res.body) ? (res.body as HealthServiceEntry[]) : [];
  }

  /** The raft leader's address, "" while there is none. */
  async statusLeader(): Promise<string> {
    const res = await this.call("get", "/status/leader", { access: "read", what: "status" });
    this.expectOk(res, "read", "status");
    return typeof res.body === "string" ? res.body : "";
  }

  // ---- plumbing ------------------------------------------------------------

  /**
   * Consul answers every KV read (a key found or not) with an X-Consul-Index header: a server
   * without it is not Consul (another web server at CONSUL_HTTP_ADDR), whose 404 must not read as
   * "no map yet".
   */
  private expectConsul(res: RawResponse): void {
    if ((res.status === 200 || res.status === 404) && res.headers["x-consul-index"] === undefined)
      throw new UserError(
        `the server at ${this.addr} answers HTTP, but not as Consul (a KV read came back ${res.status} without Consul's X-Consul-Index header); is its address right (CONSUL_HTTP_ADDR, or consul.addr in the config)?`,
        { hint: "point CONSUL_HTTP_ADDR at a Consul agent's HTTP port (8500 by default)" },
      );
  }

  private async call(
    method: "get" | "put" | "delete",
    path: string,
    opts: CallOptions,
  ): Promise<RawResponse> {
    if (opts.signal?.aborted) throw new AbortedError();
    const query: Record<string, string | number> = {};
    for (const [k, v] of Object.entries(opts.query ?? {}))
      if (v !== undefined && v !== false) query[k] = v === true ? "" : v;
    const headers: Record<string, string> = {};
    if (this.token) headers["x-consul-token"] = this.token;
    const ctx = new EventEmitter();
    const onAbort = () => ctx.emit("cancel");
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const req: Record<string, unknown> = {
      name: `consul.${method}`,
      path,
      query,
      headers,
      timeout: timeoutMs,
      ctx,
    };
    if (opts.body !== undefined) {
      req.type = opts.text ? "text" : "json";
      req.body = opts.body;
    }
    const fn = (this.client as unknown as Record<string, PapiCall>)[`_${method}`].bind(this.client);
    try {
      return (await fn(req, (request, next) => {
        // A non-2xx answer is still an answer: the caller words it. Only a
        // transport failure (refused, reset, timed out) rejects here.
        const transport = request.err && !(request.err as { isResponse?: boolean }).isResponse;
        if (request.res && !transport) {
          return next(false, undefined, {
            status: request.res.statusCode,
            headers: request.res.headers,
            body: request.res.body,
          } satisfies RawResponse);
        }
        return next(false, request.err ?? new Error("no response"));
      })) as RawResponse;
    } catch (err) {
      if (opts.signal?.aborted) throw new AbortedError();
      throw this.transportError(err, timeoutMs, method !== "get");
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
    }
  }

  /**
   * A request that got no answer. A write that was sent and timed out (or whose
   * connection broke) may still commit: say so, instead of "nothing changed".
   */
  private transportError(err: unknown, timeoutMs: number, isWrite: boolean): UserError {
    const e = err as Error & { isTimeout?: boolean; code?: string; cause?: { code?: string } };
    const code = e.code ?? e.cause?.code;
    const neverSent = code === "ECONNREFUSED" || code === "ENOTFOUND" || code === "EAI_AGAIN";
    // TLS spoken to a plain-HTTP port: OpenSSL's "wrong version number" (EPROTO), several lines long
    const plainHttp = code === "EPROTO" && /wrong version number|packet length too long/i.test(e.message);
    const why = e.isTimeout
      ? `no answer within ${formatSeconds(timeoutMs)}`
      : plainHttp
        ? "it does not speak TLS there: an https:// address for a plain-HTTP Consul"
        : code === "ECONNREFUSED"
          ? "connection refused"
          : code === "ENOTFOUND" || code === "EAI_AGAIN"
            ? "host not found"
            : code
              ? `${code}: ${e.message}`
              : e.message;
    // the TLS handshake failed before any request went out
    const unknownOutcome = isWrite && !neverSent && !plainHttp;
    return new UserError(
      `cannot reach Consul at ${this.addr} (${why}); is its address right (CONSUL_HTTP_ADDR, or consul.addr in the config)?` +
        (unknownOutcome ? " The write was sent: whether it committed is unknown." : ""),
      {
        hint: plainHttp
          ? "use http:// in CONSUL_HTTP_ADDR (or enable TLS on the Consul agent)"
          : unknownOutcome
            ? "once Consul answers, re-read the map (`shardctl status`) before retrying: the write may have committed"
            : "start the Consul agent or point CONSUL_HTTP_ADDR at a reachable one (SHARDCTL_CONSUL_TIMEOUT bounds each request)",
        cause: err,
      },
    );
  }

  private aclError(access: "read" | "write", what: string, detail: string): UserError {
    // not a permission missing: Consul does not know the token at all
    if (/ACL not found/i.test(detail))
      return new UserError(
        `Consul does not know the token in CONSUL_HTTP_TOKEN (Consul said: ${firstLine(detail)}): it was deleted, has expired, or is mistyped`,
        {
          hint: "set CONSUL_HTTP_TOKEN to a token's SecretID (`consul acl token list` shows the tokens; docs/CONSUL.md the policy it needs)",
        },
      );
    const target = what.startsWith(this.prefix) || what === this.prefix ? this.prefix : what;
    return new UserError(
      `the token in CONSUL_HTTP_TOKEN may not ${access} ${target} (Consul said: ${firstLine(detail)})`,
      {
        hint:
          access === "write"
            ? `give the token a policy with key_prefix "${this.prefix}" { policy = "write" } and session_prefix "" { policy = "write" } (see docs/CONSUL.md)`
            : `give the token a policy with key_prefix "${this.prefix}" { policy = "read" } (see docs/CONSUL.md)`,
      },
    );
  }

  private expectOk(res: RawResponse, access: "read" | "write", what: string): void {
    if (res.status >= 200 && res.status < 300) return;
    const detail =
      typeof res.body === "string" ? res.body : res.body ? JSON.stringify(res.body) : `HTTP ${res.status}`;
    if (res.status === 403) throw this.aclError(access, what, detail);
    if (res.status === 401) throw this.aclError(access, what, detail);
    if (res.status === 413) {
      throw new Error(`bug: Consul refused a request as too large (${firstLine(detail)})`);
    }
    if (res.status >= 500) {
      throw new UserError(
        `Consul at ${this.addr} could not serve the request (${res.status}: ${firstLine(detail)})`,
        {
          hint: /leader/i.test(detail)
            ? "the Consul cluster has no leader right now (an election or lost quorum); retry in a few seconds"
            : "check the Consul servers' logs; retry when they are healthy",
        },
      );
    }
    throw new UserError(`Consul at ${this.addr} refused the request (${res.status}: ${firstLine(detail)})`);
  }
}

function blockingTimeout(waitS: number, baseMs: number): number {
  // Consul adds up to wait/16 of jitter to a blocking query.
  return waitS * 1000 + Math.ceil((waitS * 1000) / 16) + baseMs;
}

function indexOf(res: RawResponse): number {
  const h = res.headers["x-consul-index"];
  const n = Number(Array.isArray(h) ? h[0] : h);
  return Number.isFinite(n) ? n : 0;
}

function decodeEntry(e: KvEntry): Omit<KvEntry, "Value"> & { value: string } {
  const { Value, ...rest } = e;
  return { ...rest, value: Value == null ? "" : Buffer.from(Value, "base64").toString("utf8") };
}

function toTxnKv(op: TxnOp): Record<string, unknown> {
  switch (op.verb) {
    case "set":
      return { Verb: "set", Key: op.key, Value: op.encoding === "base64" ? op.value : b64(op.value) };
    case "cas":
      return { Verb: "cas", Key: op.key, Value: b64(op.value), Index: op.index };
    case "check-index":
      return { Verb: "check-index", Key: op.key, Index: op.index };
    case "check-not-exists":
      return { Verb: "check-not-exists", Key: op.key };
    case "check-session":
      return { Verb: "check-session", Key: op.key, Session: op.session };
    case "delete":
      return { Verb: "delete", Key: op.key };
    case "delete-cas":
      return { Verb: "delete-cas", Key: op.key, Index: op.index };
    case "get":
      return { Verb: "get", Key: op.key };
  }
}

/** Size in bytes a txn operation adds to the request body (its value is base64 in JSON). */
export function txnOpBytes(op: TxnOp): number {
  const valueBytes =
    "value" in op
      ? op.verb === "set" && op.encoding === "base64"
        ? op.value.length
        : Math.ceil(Buffer.byteLength(op.value) / 3) * 4
      : 0;
  return valueBytes + Buffer.byteLength(op.key) + 80;
}

function b64(s: string): string {
  return Buffer.from(s, "utf8").toString("base64");
}

function encodeKey(key: string): string {
  return key.split("/").map(encodeURIComponent).join("/");
}

function firstLine(s: string): string {
  const line = s.split("\n")[0].trim();
  return line.length > 300 ? line.slice(0, 300) + "…" : line;
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
