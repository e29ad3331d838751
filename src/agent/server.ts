/**
 * The agent's HTTP/1.1 API (see docs/AGENT.md for every endpoint). Data
 * requests name the shard and carry the epoch the client believes in
 * (`x-shard-epoch`) and its origin zone (`x-origin-zone`). Values travel as
 * raw bodies (single key) or base64 in JSON (batch).
 *
 * Every check runs before anything changes: a refused request leaves the
 * log, the state, the epoch and the access windows as they were.
 */
import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { NODE_ID_PATTERN } from "../engine/location-map.js";
import type { AccessWindows, SegmentWindows } from "../engine/access-windows.js";
import { exportChecksumRequest, exportRequest, IMPORT_ACTIONS, importAdmin } from "./import.js";
import type { Agent } from "./agent.js";
import {
  ApiError,
  badRequest,
  decodeBase64,
  intField,
  optionalMigrationId,
  readBody,
  readJson,
  sendError,
  sendJson,
  sendJsonText,
} from "./http-util.js";
import { lastProbe, probeRequest } from "./probe.js";
import { nodeResources } from "./resources.js";
import {
  checkRanges as parseRanges,
  checksumRequest,
  logRequest,
  REPLICATION_ACTIONS,
  replicationAdmin,
} from "./replication.js";
import { SnapshotFailed, type WriteOp, type WriteResult } from "./shard.js";
import type { StateValue } from "./snapshot.js";
import { installSnapshotRequest, snapshotRequest } from "./snapshot-transfer.js";
import {
  checkKey,
  checkShardAccess,
  describeShard,
  parseWriteId,
  requireShard,
  requireShardId,
  writeFailed,
  zoneIndex,
} from "./data-plane.js";
import { NO_ROOM } from "./fs-util.js";
import { pipeInSlices, runInSlices } from "../slices.js";

const JSON_LIMIT_EXTRA = 1024 * 1024;
const MAX_BATCH_OPS = 10_000;
/** A get's answer in a batch without its value: `{"found":true,"value":"","lsn":…},` at most. */
const BATCH_GET_OVERHEAD = 48;

const expectedAuth = new WeakMap<Agent, Buffer>();

/**
 * Constant-time comparison of the Authorization header with "Bearer <token>". The header must come
 * once: node keeps the first copy and drops the others, so a request carrying a wrong token beside the
 * right one (or one a proxy in front would read differently) is refused, not judged by its first copy.
 */
function authorized(agent: Agent, req: IncomingMessage): boolean {
  let expected = expectedAuth.get(agent);
  if (!expected) {
    expected = Buffer.from(`Bearer ${agent.opts.token}`);
    expectedAuth.set(agent, expected);
  }
  const h = req.headers.authorization;
  if (typeof h !== "string" || Buffer.byteLength(h) !== expected.length) return false;
  let copies = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === "authorization") copies++;
  return copies === 1 && timingSafeEqual(Buffer.from(h), expected);
}

/** Whether the request announced a body (node's parser reads one only then). */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  return (length !== undefined && length !== "0") || req.headers["transfer-encoding"] !== undefined;
}

function splitPath(url: string): { parts: string[]; query: URLSearchParams } {
  const q = url.indexOf("?");
  const path = q < 0 ? url : url.slice(0, q);
  const query = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
  const raw = path.split("/").filter((p) => p !== "");
  const parts = raw.map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      throw badRequest("the request path is not valid percent-encoded UTF-8");
    }
  });
  return { parts, query };
}

export async function handleRequest(agent: Agent, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let op = "unknown";
  try {
    if (agent.stopping) {
      throw new ApiError(
        503,
        "shutting-down",
        "the agent is shutting down",
        {},
        { connection: "close", "retry-after": "1" },
      );
    }
    if (req.httpVersion === "1.1" && req.headers.host === undefined) {
      throw new ApiError(
        400,
        "bad-request",
        "an HTTP/1.1 request needs a Host header (RFC 9112, section 3.2); nothing was done",
        {},
        { connection: "close" },
      );
    }
    const method = req.method ?? "GET";
    // a path that does not decode is answered after the token check: a client without the token
    // learns nothing but 401
    let path: ReturnType<typeof splitPath> | ApiError;
    try {
      path = splitPath(req.url ?? "/");
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      path = err;
    }
    if (
      !(path instanceof ApiError) &&
      path.parts.length === 1 &&
      path.parts[0] === "health" &&
      method === "GET"
    ) {
      op = "health";
      let failed = 0;
      for (const s of agent.shards.values()) if (s.failed) failed++;
      return sendJson(res, 200, {
        status: "ok",
        nodeId: agent.opts.nodeId,
        dataDirId: agent.dataDirId,
        zone: agent.opts.zone,
        shards: agent.shards.size,
        failedShards: failed,
        binaryPort: agent.binary?.port,
      });
    }
    if (!authorized(agent, req)) {
      op = "auth";
      throw new ApiError(
        401,
        "unauthorized",
        "missing or wrong bearer token",
        {},
        { "www-authenticate": 'Bearer realm="shardctl-agent"' },
      );
    }
    if (path instanceof ApiError) throw path;
    const { parts, query } = path;
    if (parts.length === 1 && parts[0] === "metrics" && method === "GET") {
      op = "metrics";
      const text = await agent.metrics.registry.metrics();
      res.writeHead(200, { "content-type": agent.metrics.registry.contentType });
      res.end(text);
      return;
    }
    if (parts[0] !== "v1") throw new ApiError(404, "no-route", `no such endpoint: ${method} ${req.url}`);
    const [, a, b, c, d] = parts;
    // /v1/shards/:id/keys/:key
    if (a === "shards" && c === "keys" && parts.length === 5) {
      op = method === "GET" ? "get" : method === "PUT" ? "put" : method === "DELETE" ? "delete" : "unknown";
      if (op === "unknown")
        throw new ApiError(405, "method-not-allowed", `${method} is not allowed on a key`);
      return await keyRequest(agent, req, res, method, b, d);
    }
    if (a === "shards" && c === "batch" && parts.length === 4 && method === "POST") {
      op = "batch";
      return await batchRequest(agent, req, res, b);
    }
    if (a === "shards" && parts.length === 4 && method === "GET" && (c === "log" || c === "checksum")) {
      op = "replication";
      return await (c === "log" ? logRequest : checksumRequest)(agent, res, b, query);
    }
    if (
      a === "shards" &&
      parts.length === 4 &&
      method === "GET" &&
      (c === "export" || c === "export-checksum")
    ) {
      op = "replication";
      return await (c === "export" ? exportRequest : exportChecksumRequest)(agent, res, b, query);
    }
    if (a === "admin" && b === "shards" && parts.length === 5 && method === "POST" && IMPORT_ACTIONS.has(d)) {
      op = "replication";
      return await importAdmin(agent, req, res, c, d);
    }
    if (a === "shards" && parts.length === 4 && method === "GET" && c === "snapshot") {
      op = "replication";
      return await snapshotRequest(agent, res, b);
    }
    if (a === "admin" && b === "shards" && parts.length === 5 && method === "PUT" && d === "snapshot") {
      op = "replication";
      return await installSnapshotRequest(agent, req, res, c);
    }
    if (
      a === "admin" &&
      b === "shards" &&
      parts.length === 5 &&
      method === "POST" &&
      REPLICATION_ACTIONS.has(d)
    ) {
      op = "replication";
      return await replicationAdmin(agent, req, res, c, d);
    }
    if (a === "shards" && parts.length === 2 && method === "GET") {
      op = "inventory";
      return sendJson(res, 200, {
        nodeId: agent.opts.nodeId,
        shards: [...agent.shards.values()].map(describeShard),
      });
    }
    if (a === "shards" && parts.length === 3 && method === "GET") {
      op = "inventory";
      return sendJson(res, 200, describeShard(requireShard(agent, b)));
    }
    if (a === "admin" && b === "probe" && parts.length === 3) {
      op = "probe";
      return await probeRequest(agent, req, res, method);
    }
    if (a === "admin" && b === "shards") {
      op = "admin";
      return await adminRequest(agent, req, res, method, c, d, parts.length);
    }
    if (a === "access") {
      op = "access";
      return await accessRequest(agent, res, method, parts, query);
    }
    if (a === "admin" && b === "access" && parts.length === 4 && method === "PUT") {
      // PUT /v1/admin/access/:segment: a segment's windows from a migration's source
      op = "admin";
      const segment = Number(c);
      if (!/^\d{1,9}$/.test(c ?? "") || segment >= agent.opts.segments)
        throw badRequest(`segment must be 0..${agent.opts.segments - 1}`);
      const body = (await readJson(req, 8 * 1024 * 1024)) as SegmentWindows;
      if (!body || typeof body !== "object" || body.segment !== segment)
        throw badRequest("the body must be the windows of this segment (GET /v1/access/:segment/export)");
      try {
        agent.windows.importSegment(body);
      } catch (err) {
        throw badRequest((err as Error).message);
      }
      return sendJson(res, 200, { segment });
    }
    if (a === "node" && parts.length === 2 && method === "GET") {
      op = "node";
      return sendJson(res, 200, {
        nodeId: agent.opts.nodeId,
        zone: agent.opts.zone,
        address: `${agent.opts.host}:${agent.opts.port}`,
        shards: agent.shards.size,
        segments: agent.opts.segments,
        ...(await nodeResources(agent.opts.dataDir)),
        rtt: lastProbe(agent) ?? null,
      });
    }
    throw new ApiError(404, "no-route", `no such endpoint: ${method} ${req.url}`);
  } catch (err) {
    const apiErr =
      err instanceof ApiError
        ? err
        : new ApiError(500, "internal", `internal error: ${(err as Error)?.message ?? String(err)}`);
    if (apiErr.status === 500 && !(err instanceof ApiError))
      agent.log(`internal error on ${req.method} ${req.url}: ${(err as Error)?.stack}`);
    if (!res.headersSent) {
      // an unread or oversize body: close the connection rather than read it (a request without a
      // body has nothing unread, though req.complete is still false while its handler runs at once)
      if (apiErr.status === 413 || (!req.complete && hasBody(req))) {
        res.setHeader("connection", "close");
        req.resume(); // discard the rest, so that the client reads this answer rather than a reset
      }
      sendError(res, apiErr);
    } else {
      res.destroy();
    }
  } finally {
    agent.metrics.countRequest(op, res.statusCode);
  }
}

/**
 * GET /v1/access/export answers written at once: each holds a chunk's buffer (2.4 MB per 1,024
 * segments) and takes its share of the event loop.
 */
export const MAX_WINDOW_EXPORTS = 4;

/** Writes one piece of a streamed answer; a promise when the socket must drain first (rejected if the client goes away). */
export function writePiece(res: ServerResponse, piece: Uint8Array): void | Promise<void> {
  if (res.destroyed) throw new Error("the client went away");
  if (res.write(piece)) return;
  return new Promise<void>((resolve, reject) => {
    const gone = () => reject(new Error("the client went away"));
    res.once("close", gone);
    res.once("drain", () => {
      res.off("close", gone);
      resolve();
    });
  });
}

/**
 * Every segment's windows in the windows file's form, streamed: laid out a chunk of 1,024 segments
 * at a time between other requests and sent as they come (pipeInSlices, waiting for the socket to
 * drain), so that neither the loop nor the agent's memory holds the whole form (234 MB for 100,000
 * active segments). Its length is known at the start (content-length); `x-now-ms` is the agent's
 * time when it began (events recorded while it is written may be in it, with later stamps). A
 * client that goes away ends it; an error after the head destroys the connection, so the client
 * sees a short answer, never a complete one.
 */
async function exportWindows(agent: Agent, res: ServerResponse): Promise<void> {
  if (agent.windowExports >= MAX_WINDOW_EXPORTS) {
    throw new ApiError(
      503,
      "busy",
      `${MAX_WINDOW_EXPORTS} exports of the access windows are being written; ask again when one has ended`,
    );
  }
  agent.windowExports++;
  try {
    const { length, pieces } = agent.windows.serializeStream();
    res.writeHead(200, {
      "content-type": "application/octet-stream",
      "content-length": length,
      "x-now-ms": String(Date.now()),
    });
    await pipeInSlices(pieces, (piece) => writePiece(res, piece));
    res.end();
  } finally {
    agent.windowExports--;
  }
}

function epochHeader(req: IncomingMessage): number {
  const raw = req.headers["x-shard-epoch"];
  // up to 2^53 − 1 as over the binary protocol and the admin API (checkShardAccess refuses more)
  return typeof raw === "string" && /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
}

function originZone(agent: Agent, req: IncomingMessage): number {
  const z = req.headers["x-origin-zone"];
  if (Array.isArray(z)) throw badRequest("x-origin-zone must be given once");
  return zoneIndex(agent, z);
}

/**
 * The writes in flight on each connection, for the requests pipelined after them: HTTP/1.1 lets a
 * client send requests without waiting for answers, and Node hands them over as they are parsed,
 * so a GET sent after a PUT on one connection would read before the PUT's fsync and answer the old
 * value after the PUT was acknowledged. A read (a GET, a batch) first waits for the writes sent
 * before it on its connection; writes do not wait for each other (they reach the log in the order
 * their bodies arrive, as before).
 */
const writesInFlight = new WeakMap<object, Promise<unknown>>();

/** Waits for the writes sent before this request on its connection (their outcome does not matter). */
async function afterEarlierWrites(req: IncomingMessage): Promise<void> {
  const earlier = writesInFlight.get(req.socket);
  if (earlier) await earlier.catch(() => undefined);
}

/** Runs `write`, and has the reads pipelined after it on its connection wait for it (writes do not wait). */
function asConnectionWrite(req: IncomingMessage, write: () => Promise<void>): Promise<void> {
  const p = write();
  const earlier = writesInFlight.get(req.socket);
  const all = earlier ? Promise.allSettled([earlier, p]) : p;
  writesInFlight.set(req.socket, all);
  const clear = () => {
    if (writesInFlight.get(req.socket) === all) writesInFlight.delete(req.socket);
  };
  all.then(clear, clear);
  return p;
}

async function keyRequest(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  shardId: string | undefined,
  key: string,
): Promise<void> {
  if (method !== "GET") return asConnectionWrite(req, () => keyWrite(agent, req, res, method, shardId, key));
  await afterEarlierWrites(req);
  const { shard, epoch } = checkShardAccess(agent, shardId, epochHeader(req), false);
  const segment = checkKey(agent, shard, key);
  const zone = originZone(agent, req);
  shard.raiseEpoch(epoch);
  const v = shard.get(key);
  agent.windows.record(segment, false, zone, Date.now());
  if (!v)
    throw new ApiError(404, "key-not-found", `key not found in shard ${shard.id}`, {
      epoch: shard.meta.epoch,
    });
  res.writeHead(200, {
    "content-type": "application/octet-stream",
    "content-length": v.value.length,
    "x-lsn": String(v.lsn),
    "x-timestamp": String(v.timestamp),
    "x-shard-epoch": String(shard.meta.epoch),
  });
  res.end(v.value);
}

async function keyWrite(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  shardId: string | undefined,
  key: string,
): Promise<void> {
  const { shard, epoch } = checkShardAccess(agent, shardId, epochHeader(req), true);
  const segment = checkKey(agent, shard, key);
  const zone = originZone(agent, req);
  // the same id on every retry of this write: a retry of a write already applied is not applied again
  const writeId = parseWriteId(req.headers["x-write-id"], "x-write-id");
  const value = method === "PUT" ? await readBody(req, agent.opts.maxValueBytes, "value") : undefined;
  if (method === "DELETE") await readBody(req, 0, "body of a delete");
  // re-check after the body arrived: a fence, a newer epoch or a stop may have come in meanwhile
  if (agent.stopping)
    throw new ApiError(503, "shutting-down", "the agent is shutting down", {}, { "retry-after": "1" });
  checkShardAccess(agent, shardId, epochHeader(req), true);
  shard.raiseEpoch(epoch);
  const op: WriteOp = method === "PUT" ? { op: "put", key, value, writeId } : { op: "delete", key, writeId };
  let r: WriteResult;
  try {
    [r] = await shard.write([op]);
  } catch (err) {
    throw writeFailed(shard, err);
  }
  agent.windows.record(segment, true, zone, Date.now());
  const epochNow = shard.meta.epoch;
  // the hot path: a hand-built body instead of JSON.stringify of an object
  const text =
    r.existed === undefined
      ? `{"lsn":${r.lsn},"epoch":${epochNow}}`
      : `{"lsn":${r.lsn},"existed":${r.existed},"epoch":${epochNow}}`;
  const headers: Record<string, string | number> = {
    "content-type": "application/json",
    "content-length": text.length,
    "x-shard-epoch": String(epochNow),
  };
  // a retry of a write already applied: the answer is the original's (its LSN); nothing was appended
  if (r.duplicate) headers["x-write-duplicate"] = "true";
  res.writeHead(200, headers);
  res.end(text);
}

interface BatchOp {
  op: "put" | "delete" | "get";
  key: string;
  value?: string;
  /** 32 hex digits, as x-write-id (puts and deletes). */
  writeId?: string;
}

/** A batch reads after the writes sent before it on its connection, and the reads after it wait for it. */
function batchRequest(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  shardId: string | undefined,
): Promise<void> {
  return asConnectionWrite(req, async () => {
    await afterEarlierWrites(req);
    await runBatch(agent, req, res, shardId);
  });
}

async function runBatch(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  shardId: string | undefined,
): Promise<void> {
  checkShardAccess(agent, shardId, epochHeader(req), false);
  const body = (await readJson(req, agent.opts.maxValueBytes * 2 + JSON_LIMIT_EXTRA)) as { ops?: unknown };
  if (!body || typeof body !== "object" || !Array.isArray(body.ops))
    throw badRequest('the body must be {"ops": [...]}');
  if (body.ops.length === 0 || body.ops.length > MAX_BATCH_OPS)
    throw badRequest(`a batch holds 1 to ${MAX_BATCH_OPS} ops`);
  const ops = body.ops as BatchOp[];
  const hasWrite = ops.some((o) => o && (o.op === "put" || o.op === "delete"));
  const { shard, epoch } = checkShardAccess(agent, shardId, epochHeader(req), hasWrite);
  const zone = originZone(agent, req);
  const writes: WriteOp[] = [];
  const segments: number[] = [];
  ops.forEach((o, i) => {
    if (!o || typeof o !== "object" || !["put", "delete", "get"].includes(o.op)) {
      throw badRequest(`ops[${i}].op must be put, delete or get`);
    }
    segments.push(checkKey(agent, shard, o.key));
    const writeId = parseWriteId(o.writeId, `ops[${i}].writeId`);
    if (writeId && o.op === "get") throw badRequest(`ops[${i}] is a get; a write id names a put or a delete`);
    if (o.op === "put") {
      const value = decodeBase64(o.value, `ops[${i}].value`);
      if (value.length > agent.opts.maxValueBytes) {
        throw new ApiError(
          413,
          "too-large",
          `ops[${i}].value is ${value.length} bytes; the limit is ${agent.opts.maxValueBytes} bytes`,
          {
            limit: agent.opts.maxValueBytes,
          },
        );
      }
      writes.push({ op: "put", key: o.key, value, writeId });
    } else if (o.op === "delete") {
      writes.push({ op: "delete", key: o.key, writeId });
    }
  });
  if (agent.stopping) {
    throw new ApiError(503, "shutting-down", "the agent is shutting down", {}, { "retry-after": "1" });
  }
  // Each get answers the state at its place in the batch: the batch's last write to its key before
  // it (`write`: its index in writes), or the value stored before the batch's writes (`stored`).
  const lastWrite = new Map<string, number>();
  const gets: ({ write: number } | { stored: StateValue | undefined })[] = [];
  let answerBytes = 0;
  let w = 0;
  for (const o of ops) {
    if (o.op !== "get") {
      lastWrite.set(o.key, w++);
      continue;
    }
    const write = lastWrite.get(o.key);
    const got: (typeof gets)[number] = write !== undefined ? { write } : { stored: shard.peek(o.key) };
    const value = "write" in got ? writes[got.write].value : got.stored?.value;
    answerBytes += BATCH_GET_OVERHEAD + (value ? 4 * Math.ceil(value.length / 3) : 0);
    gets.push(got);
  }
  const answerLimit = agent.opts.maxValueBytes * 2 + JSON_LIMIT_EXTRA;
  if (answerBytes > answerLimit) {
    throw new ApiError(
      413,
      "too-large",
      `the answer to this batch's ${gets.length} gets would be about ${answerBytes} bytes; the limit is ${answerLimit} bytes (as for a request): ask for fewer keys per batch, or get large values one at a time`,
      { limit: answerLimit },
    );
  }
  type GetAnswer = { found: false } | { found: true; value: string; lsn: number };
  // the stored values are encoded now: a later write may update an entry in place
  const answers: (GetAnswer | number)[] = gets.map((got) => {
    if ("write" in got) return got.write;
    const v = got.stored;
    return v ? { found: true, value: v.value.toString("base64"), lsn: v.lsn } : { found: false };
  });
  shard.raiseEpoch(epoch);
  let results: WriteResult[] = [];
  try {
    if (writes.length) results = await shard.write(writes);
  } catch (err) {
    throw writeFailed(shard, err);
  }
  const now = Date.now();
  let g = 0;
  w = 0;
  const out = ops.map((o, i) => {
    agent.windows.record(segments[i], o.op !== "get", zone, now);
    if (o.op !== "get") return results[w++];
    const a = answers[g++];
    if (typeof a !== "number") return a;
    const { value } = writes[a];
    return value ? { found: true, value: value.toString("base64"), lsn: results[a].lsn } : { found: false };
  });
  sendJson(res, 200, { epoch: shard.meta.epoch, results: out });
}

async function adminRequest(
  agent: Agent,
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  shardId: string | undefined,
  action: string | undefined,
  nparts: number,
): Promise<void> {
  const id = requireShardId(shardId);
  const body = (await readJson(req, JSON_LIMIT_EXTRA)) as Record<string, unknown>;
  if (!body || typeof body !== "object" || Array.isArray(body))
    throw badRequest("the body must be a JSON object");
  const epoch = intField(body.epoch, "epoch", 1);
  const existing = agent.shards.get(id);
  // PUT /v1/admin/shards/:id  {epoch, ranges?, migrationTimestamp?, segmentCount?}: create, or take ownership at a newer epoch
  if (nparts === 4 && method === "PUT") {
    if (body.segmentCount !== undefined && body.segmentCount !== agent.opts.segments) {
      throw badRequest(
        `the location map has ${JSON.stringify(body.segmentCount)} segments but this agent was started with ${agent.opts.segments}; keys would be counted in the wrong segments`,
        { segments: agent.opts.segments },
      );
    }
    const ranges = body.ranges === undefined ? undefined : parseRanges(body.ranges, agent.opts.segments);
    const mts =
      body.migrationTimestamp === undefined
        ? undefined
        : intField(body.migrationTimestamp, "migrationTimestamp", 0);
    if (!existing) {
      const shard = await agent.createShard(id, epoch, ranges, mts ?? 0);
      return sendJson(res, 201, describeShard(shard));
    }
    if (existing.failed)
      throw new ApiError(500, "shard-failed", `shard ${id} is refused: ${existing.failed}`);
    const m = existing.meta;
    if (epoch < m.epoch || (epoch === m.epoch && m.state !== "owned")) {
      throw new ApiError(
        409,
        "stale-epoch",
        `cannot assign shard ${id} at epoch ${epoch}: it is at epoch ${m.epoch} (${m.state})`,
        {
          epoch: m.epoch,
        },
      );
    }
    existing.assign(epoch, ranges, mts);
    return sendJson(res, 200, describeShard(existing));
  }
  const shard = existing;
  if (!shard)
    throw new ApiError(404, "unknown-shard", `this agent (${agent.opts.nodeId}) holds no shard ${id}`);
  if (shard.failed && !(nparts === 4 && method === "DELETE")) {
    throw new ApiError(500, "shard-failed", `shard ${id} is refused: ${shard.failed}`);
  }
  if (epoch < shard.meta.epoch) {
    throw new ApiError(
      409,
      "stale-epoch",
      `epoch ${epoch} is stale: shard ${id} is at epoch ${shard.meta.epoch}`,
      { epoch: shard.meta.epoch },
    );
  }
  const migration = optionalMigrationId(body.migration);
  const otherMigration = () => {
    if (migration && shard.meta.migration && shard.meta.migration !== migration) {
      throw new ApiError(
        409,
        "another-migration",
        `shard ${id} is held by migration ${shard.meta.migration}, not ${migration}; nothing was changed`,
        { migration: shard.meta.migration },
      );
    }
  };
  if (nparts === 4 && method === "DELETE") {
    otherMigration();
    if (shard.meta.state === "owned" && !shard.failed) {
      throw new ApiError(
        409,
        "still-owned",
        `shard ${id} is owned here; release or fence it before dropping it`,
      );
    }
    await agent.dropShard(id);
    return sendJson(res, 200, { dropped: id });
  }
  if (nparts !== 5 || method !== "POST")
    throw new ApiError(404, "no-route", `no such endpoint: ${method} ${req.url}`);
  if (
    (shard.meta.state === "receiving" || shard.meta.state === "prepared") &&
    (action === "fence" || action === "unfence" || action === "release")
  ) {
    throw new ApiError(
      409,
      "not-owner",
      `shard ${id} is a migration target here (${shard.meta.state}); activate or drop it instead`,
    );
  }
  switch (action) {
    case "fence": {
      if (shard.meta.state === "not-owned")
        throw new ApiError(409, "not-owner", `shard ${id} is not owned here`);
      if (shard.meta.state === "fenced") otherMigration();
      shard.fence(epoch, migration);
      // the agent's own writes (a purge) finish, and writes accepted before the fence reach their
      // fsync: the fenced LSN is the last durable one, and nothing is written after it
      await shard.settle();
      await shard.drain();
      return sendJson(res, 200, describeShard(shard));
    }
    case "unfence": {
      if (shard.meta.state === "not-owned")
        throw new ApiError(409, "not-owner", `shard ${id} is not owned here`);
      otherMigration();
      shard.unfence(epoch);
      return sendJson(res, 200, describeShard(shard));
    }
    case "release": {
      const r = body.redirect as Record<string, unknown> | undefined;
      if (!r || typeof r !== "object") throw badRequest("redirect {node, address, epoch} is required");
      if (typeof r.node !== "string" || !NODE_ID_PATTERN.test(r.node))
        throw badRequest("redirect.node must be a node id");
      if (typeof r.address !== "string" || !/^[A-Za-z0-9.:[\]-]+:\d{1,5}$/.test(r.address)) {
        throw badRequest("redirect.address must be host:port");
      }
      const redirect = { node: r.node, address: r.address, epoch: intField(r.epoch, "redirect.epoch", 1) };
      shard.release(epoch, redirect);
      await shard.drain();
      // the new owner holds it all: this copy's data goes (before the answer, so that nothing the
      // coordinator does next can meet a copy half discarded; the target's activation, not this
      // answer, ends the write pause)
      await agent.discardReleased(shard);
      return sendJson(res, 200, describeShard(shard));
    }
    case "snapshot": {
      let lsn: number | undefined;
      // one being written (the shard's own, after enough log) is the one asked for: its answer
      if (shard.snapshotRunning) await shard.snapshotFinished();
      // a migration copying the shard holds its log and the snapshot it started from
      if (shard.compactionHeld) {
        const s = Math.ceil(shard.compactionHeldForMs / 1000);
        throw new ApiError(
          409,
          "compaction-held",
          `shard ${id}: no snapshot was taken: a migration copying the shard (a move, split or merge) holds its log and snapshot for up to ${s} s more; ask again then`,
          { retryAfterS: s },
          { "retry-after": String(s) },
        );
      }
      try {
        lsn = await shard.snapshot(true);
      } catch (err) {
        if (!(err instanceof SnapshotFailed)) throw err;
        throw new ApiError(
          err.code && NO_ROOM.has(err.code) ? 507 : 500,
          "snapshot-failed",
          `shard ${id}: ${err.message}. ${err.written ? "Ask again to finish." : "Make room on the disk (or fix it) and ask again."}`,
          { lsn: err.lsn, written: err.written },
        );
      }
      return sendJson(res, 200, { ...describeShard(shard), snapshotLsn: lsn ?? shard.snapshotLsn });
    }
    default:
      throw new ApiError(404, "no-route", `no such admin action: ${action}`);
  }
}

/**
 * The JSON of GET /v1/access: every active segment's rates over the window at `now`, a step per
 * 512 segments (events recorded between steps, later than `now`, are not in the rates).
 */
function* rateListSteps(w: AccessWindows, windowS: number, now: number): Generator<void, string, void> {
  const entries: string[] = [];
  for (const s of w.activeSegments()) {
    entries.push(JSON.stringify({ segment: s, ...w.rate(s, windowS, now) }));
    if (entries.length % 512 === 0) yield;
  }
  const head = JSON.stringify({
    nowMs: now,
    windowSeconds: windowS,
    segmentCount: w.segmentCount,
    zones: w.zones,
    levels: w.levels,
    segments: [],
  });
  // (the envelope ends with the empty list: `..."segments":[]}`)
  return `${head.slice(0, -2)}${entries.join(",")}]}`;
}

function accessRequest(
  agent: Agent,
  res: ServerResponse,
  method: string,
  parts: string[],
  query: URLSearchParams,
): void | Promise<void> {
  if (method !== "GET") throw new ApiError(405, "method-not-allowed", "the access endpoints are read-only");
  const now = Date.now();
  const w = agent.windows;
  if (parts.length === 2) {
    // GET /v1/access?window=S: per-segment rates of every segment with windows
    // a decimal number of seconds, from one second to the longest span the windows hold (a longer
    // one would be answered with the rates of a shorter span than it names)
    const longest = Math.max(...w.levels.map((l) => l.resolutionSeconds * l.slots));
    const raw = query.get("window") ?? "600";
    const windowS = /^\d{1,12}(\.\d{1,9})?$/.test(raw) ? Number(raw) : NaN;
    if (!(windowS >= 1 && windowS <= longest))
      throw badRequest(
        `window must be a number of seconds from 1 to ${longest} (the longest span the windows hold), got ${JSON.stringify(raw.slice(0, 40))}`,
      );
    // (written between other requests: with 100,000 active segments the list takes a few hundred ms)
    return runInSlices(rateListSteps(w, windowS, now)).then((text) => sendJsonText(res, 200, text));
  }
  if (parts.length === 3 && parts[2] === "export") {
    // GET /v1/access/export: every segment's windows in one binary answer (the SCAW1 form of the
    // windows file), for a collector that would otherwise ask segment by segment
    return exportWindows(agent, res);
  }
  const segment = Number(parts[2]);
  if (!Number.isInteger(segment) || segment < 0 || segment >= w.segmentCount) {
    throw badRequest(`segment must be an integer in 0..${w.segmentCount - 1}`);
  }
  if (parts.length === 4 && parts[3] === "series") {
    const level = query.has("level") ? Number(query.get("level")) : 0;
    if (!Number.isInteger(level) || level < 0 || level >= w.levels.length)
      throw badRequest(`level must be 0..${w.levels.length - 1}`);
    const which = query.get("which") ?? "total";
    let series: Float64Array;
    try {
      series = w.series(segment, level, now, which);
    } catch (err) {
      throw badRequest((err as Error).message);
    }
    return sendJson(res, 200, {
      nowMs: now,
      segment,
      level,
      which,
      resolutionSeconds: w.levels[level].resolutionSeconds,
      series: Array.from(series),
    });
  }
  if (parts.length === 4 && parts[3] === "export") {
    const data = w.exportSegment(segment);
    if (!data) throw new ApiError(404, "no-windows", `segment ${segment} has no access windows here`);
    return sendJson(res, 200, data);
  }
  throw new ApiError(404, "no-route", "no such access endpoint");
}
