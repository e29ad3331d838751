/**
 * HTTP calls to node agents (their API is in docs/AGENT.md): one keep-alive
 * connection pool, the bearer token, and typed helpers for the admin and
 * inventory endpoints. The routing client, the local cluster and the
 * migration code use it; it interprets nothing but transport failures.
 */
import { Agent as HttpAgent, request, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import type { Readable } from "node:stream";
import type { SegmentRange } from "../engine/location-map.js";

export interface AgentResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface AgentRpcOptions {
  token: string;
  /** Per-request timeout (default 10 s). */
  timeoutMs?: number;
  maxSockets?: number;
}

export class AgentRpc {
  readonly pool: HttpAgent;
  private readonly auth: string;
  private readonly timeoutMs: number;

  constructor(opts: AgentRpcOptions) {
    this.pool = new HttpAgent({ keepAlive: true, maxSockets: opts.maxSockets ?? 64, keepAliveMsecs: 10_000 });
    this.auth = `Bearer ${opts.token}`;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** One request to `address` (host:port); rejects only on transport errors, never on a status. */
  request(
    address: string,
    method: string,
    path: string,
    opts: {
      headers?: Record<string, string>;
      body?: Buffer | string;
      auth?: boolean;
      /** Called once the request has a connected socket (a new one connected, or a kept-alive one). */
      onConnect?: () => void;
      /** Aborts the request (destroys it: not sent at all when it had no connection yet). */
      signal?: AbortSignal;
    } = {},
  ): Promise<AgentResponse> {
    const { host, port } = splitAddress(address);
    const headers: Record<string, string | number> = { ...opts.headers };
    if (opts.auth !== false) headers.authorization = this.auth;
    if (opts.body !== undefined) headers["content-length"] = Buffer.byteLength(opts.body);
    return new Promise((resolve, reject) => {
      const req = request(
        { host, port, method, path, headers, agent: this.pool, timeout: this.timeoutMs, signal: opts.signal },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
          );
          res.on("error", reject);
        },
      );
      req.on("timeout", () =>
        req.destroy(new Error(`no answer from ${address} within ${this.timeoutMs} ms`)),
      );
      req.on("error", reject);
      if (opts.onConnect) {
        const onConnect = opts.onConnect;
        req.once("socket", (socket) => {
          if (socket.connecting) socket.once("connect", onConnect);
          else onConnect();
        });
      }
      req.end(opts.body);
    });
  }

  /**
   * A request whose answer is not buffered: resolves once the status and
   * headers arrived, with the body as a stream (the caller must consume or
   * destroy it). `body` may be a stream too (give its content-length in
   * `headers`); it is piped with backpressure. Rejects only on transport errors.
   */
  stream(
    address: string,
    method: string,
    path: string,
    opts: { headers?: Record<string, string>; body?: Readable } = {},
  ): Promise<{ status: number; headers: IncomingHttpHeaders; body: IncomingMessage }> {
    const { host, port } = splitAddress(address);
    const headers: Record<string, string | number> = { ...opts.headers, authorization: this.auth };
    return new Promise((resolve, reject) => {
      const req = request(
        { host, port, method, path, headers, agent: this.pool, timeout: this.timeoutMs },
        (res) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res }),
      );
      req.on("timeout", () =>
        req.destroy(new Error(`no answer from ${address} within ${this.timeoutMs} ms`)),
      );
      req.on("error", reject);
      if (opts.body) {
        // a body that breaks off aborts the request: the receiver sees a short upload, never a complete one
        opts.body.on("error", (err) => req.destroy(err));
        opts.body.pipe(req);
      } else req.end();
    });
  }

  async json<T = unknown>(
    address: string,
    method: string,
    path: string,
    body?: unknown,
    opts: { signal?: AbortSignal } = {},
  ): Promise<{ status: number; body: T }> {
    const res = await this.request(address, method, path, {
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: opts.signal,
    });
    let parsed: unknown = undefined;
    try {
      parsed = res.body.length ? JSON.parse(res.body.toString("utf8")) : undefined;
    } catch {
      parsed = { error: "not-json", message: res.body.toString("utf8").slice(0, 200) };
    }
    return { status: res.status, body: parsed as T };
  }

  async health(address: string): Promise<boolean> {
    try {
      const r = await this.request(address, "GET", "/health", { auth: false });
      return r.status === 200;
    } catch {
      return false;
    }
  }

  assignShard(
    address: string,
    shardId: string,
    body: { epoch: number; ranges?: SegmentRange[]; migrationTimestamp?: number; segmentCount?: number },
  ) {
    return this.json(address, "PUT", `/v1/admin/shards/${encodeURIComponent(shardId)}`, body);
  }

  shardAction(
    address: string,
    shardId: string,
    action: "fence" | "unfence" | "release" | "snapshot",
    body: Record<string, unknown>,
  ) {
    return this.json(address, "POST", `/v1/admin/shards/${encodeURIComponent(shardId)}/${action}`, body);
  }

  inventory(address: string) {
    return this.json<{
      nodeId: string;
      shards: { id: string; epoch: number; state: string; lsn: number; keys: number }[];
    }>(address, "GET", "/v1/shards");
  }

  close(): void {
    this.pool.destroy();
  }
}

export function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(":");
  const port = Number(address.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new Error(`bad agent address ${JSON.stringify(address)}`);
  return { host: address.slice(0, i).replace(/^\[(.*)\]$/, "$1"), port };
}

/** The path of one key's data endpoint. */
export function keyPath(shardId: string, key: string): string {
  return `/v1/shards/${encodeURIComponent(shardId)}/keys/${encodeURIComponent(key)}`;
}

/**
 * "<what> answered <status> <code>: <message>", for errors about an agent's answer; status 0 is
 * no answer at all (the request failed: "<what>: cannot reach …").
 */
export function failText(what: string, status: number, body: unknown): string {
  const b = body as { error?: string; message?: string } | undefined;
  if (status === 0) return `${what}: ${b?.message ?? "no answer"}`;
  return `${what} answered ${status}${b?.error ? ` ${b.error}` : ""}: ${b?.message ?? JSON.stringify(body)}`;
}

/** The whole body of a streamed answer (stream()). */
export function readAll(s: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("end", () => resolve(Buffer.concat(chunks)));
    s.on("error", reject);
  });
}

/** An answer's body as JSON, or its first 200 characters as the message when it is not JSON. */
export function tryJson(b: Buffer): unknown {
  try {
    return JSON.parse(b.toString("utf8"));
  } catch {
    return { message: b.toString("utf8").slice(0, 200) };
  }
}
