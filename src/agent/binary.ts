/**
 * The agent's binary protocol (optional second listener, `--listen-binary`):
 * the same get/put/delete, checks and answers as the HTTP API, in compact
 * frames over a TCP connection, for clients that want the least CPU per
 * request. Requests may be pipelined; answers carry the request's id and may
 * come back out of order (a get does not wait for a put's fsync).
 *
 * Little-endian. A connection opens with a hello:
 *   client: "SCB1", u16 tokenLength, token (UTF-8)
 *   server: "SCB1", u8 0 (accepted)  — or u8 1 and the connection is closed
 * Then request frames:
 *   u32 length (of what follows), u32 id, u8 op (1 get, 2 put, 3 delete),
 *   u8 shardIdLength, u16 keyLength, u8 zoneLength, u8 flags, f64 epoch,
 *   shard id, key, zone (UTF-8), [write id: 16 bytes, when flags bit 0],
 *   value (the rest; puts only)
 * and answer frames:
 *   u32 length, u32 id, u8 status (0 ok, 1 not found, 2 error), u8 flags, u16 httpStatus,
 *   f64 lsn, f64 epoch, then the value (get), u8 existed (delete),
 *   or JSON {error, message, …} exactly as the HTTP API's (status 2).
 * Request flags: bit 0 (FLAG_WRITE_ID) a write id follows the zone (puts and
 * deletes; as HTTP's x-write-id); other bits are refused. Answer flags: bit 0
 * (FLAG_DUPLICATE) the write id was known: the answer is the original write's
 * and nothing was appended. Clients that send flags 0 see the frames as before.
 * A frame longer than the value limit + 64 KiB, or a malformed one, ends the
 * connection: nothing after it is read, every request read before it is
 * answered (a write once it is durable), then an error answer (id 0) is sent
 * and the connection closed. A client may half-close after its last request:
 * every request read is answered, then the agent ends its side.
 * A client that does not read its answers is not read either (more than
 * MAX_UNSENT_BYTES of answers waiting stops the reading until they are sent).
 */
import { timingSafeEqual } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import type { Agent } from "./agent.js";
import { checkKey, checkShardAccess, writeFailed, zoneIndex } from "./data-plane.js";
import { ApiError, badRequest } from "./http-util.js";
import { WRITE_ID_BYTES } from "./log-format.js";

export const MAGIC = Buffer.from("SCB1");
export const OP_GET = 1;
export const OP_PUT = 2;
export const OP_DELETE = 3;
export const STATUS_OK = 0;
export const STATUS_NOT_FOUND = 1;
export const STATUS_ERROR = 2;
export const FLAG_WRITE_ID = 1;
export const FLAG_DUPLICATE = 1;
const REQ_FIXED = 18;
const RES_FIXED = 28;

export interface BinaryListener {
  server: Server;
  port: number;
  /** Closes every connection (after the writes in flight were answered). */
  destroyConnections(): void;
}

export function startBinaryServer(agent: Agent, host: string, port: number): Promise<BinaryListener> {
  const sockets = new Set<Socket>();
  // half-open: a client may send its requests and then end its side of the stream; it still gets
  // the answers (each connection ends its side once they are written)
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    new BinaryConnection(agent, socket);
  });
  // more connections are closed on arrival: each may hold up to a frame's worth of memory
  server.maxConnections = agent.opts.maxConnections ?? 1024;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () =>
      resolve({
        server,
        port: (server.address() as { port: number }).port,
        destroyConnections: () => {
          for (const s of sockets) s.destroy();
        },
      }),
    );
  });
}

/**
 * Answer bytes a connection may have queued and not yet sent before it stops reading requests. A
 * client that sends and does not read would otherwise have every answer (a get's a copy of the
 * value) kept in the agent's memory, without bound.
 */
const MAX_UNSENT_BYTES = 1 << 20;

class BinaryConnection {
  private buf: Buffer = Buffer.alloc(0);
  /** The chunks of a frame still arriving, kept apart until it is whole (one copy, not one per chunk). */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes the frame being collected in `pending` needs (0: none is). */
  private want = 0;
  private authed = false;
  private closed = false;
  /** Writes handed to a shard and not answered yet. */
  private inFlight = 0;
  /** The client ended its side of the stream: once every request read is answered, so does the agent. */
  private peerEnded = false;
  /** Drops a connection that has not said a whole hello within the headers timeout. */
  private helloTimer?: NodeJS.Timeout;
  /** Reading stopped until the answers queued are sent (MAX_UNSENT_BYTES). */
  private paused = false;
  /** The stream failed: the error answer that closes the connection once the writes in flight are answered. */
  private lastAnswer?: Buffer;
  private readonly maxFrame: number;
  /**
   * Fires frameTimeoutMs after the first byte of a frame that has not arrived whole (refreshed as
   * each partial frame starts; made once per connection, and only by one that sends frames in pieces).
   */
  private frameTimer?: NodeJS.Timeout;
  /** A frame has begun and not arrived whole (frameTimer runs for it). */
  private framePartial = false;

  constructor(
    private readonly agent: Agent,
    private readonly socket: Socket,
  ) {
    this.maxFrame = agent.opts.maxValueBytes + 64 * 1024;
    socket.on("data", (c: Buffer) => this.onData(c));
    socket.on("end", () => {
      this.peerEnded = true;
      this.endIfDone();
    });
    socket.on("close", () => {
      clearTimeout(this.frameTimer);
      clearTimeout(this.helloTimer);
    });
    // A connection that has not said a whole hello within the headers timeout is dropped (it holds
    // a socket and nothing else): a deadline from the connection's start, as for HTTP's headers, not
    // an idle timeout that a byte now and then would keep from firing.
    this.helloTimer = setTimeout(() => {
      if (!this.authed) socket.destroy();
    }, agent.opts.headersTimeoutMs ?? 10_000);
  }

  private onData(chunk: Buffer): void {
    // after a refusal nothing the peer sends is read, let alone kept
    if (this.closed) return;
    if (this.want > 0) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (this.pendingBytes < this.want) return;
      this.buf = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
      this.want = 0;
    } else {
      this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    }
    this.readFrames();
  }

  /** Handles the whole frames in `buf`, until it holds none or too many answers wait to be sent. */
  private readFrames(): void {
    while (!this.closed) {
      if (!this.authed) {
        // not this protocol (HTTP, TLS, a scanner): refused at the first byte that differs from the magic
        const n = Math.min(this.buf.length, MAGIC.length);
        if (!this.buf.subarray(0, n).equals(MAGIC.subarray(0, n))) return this.refuseHello();
        if (this.buf.length < 6) return;
        const tlen = this.buf.readUInt16LE(4);
        if (!this.buf.subarray(0, 4).equals(MAGIC) || tlen > 4096) return this.refuseHello();
        if (this.buf.length < 6 + tlen) return;
        const got = this.buf.subarray(6, 6 + tlen);
        const expected = Buffer.from(this.agent.opts.token);
        this.buf = this.buf.subarray(6 + tlen);
        if (got.length !== expected.length || !timingSafeEqual(got, expected)) return this.refuseHello();
        this.authed = true;
        clearTimeout(this.helloTimer);
        this.socket.write(Buffer.concat([MAGIC, Buffer.from([0])]));
        continue;
      }
      if (this.buf.length < 4) {
        if (this.buf.length > 0) this.partialFrame();
        return;
      }
      if (this.socket.writableLength > MAX_UNSENT_BYTES) return this.pauseUntilSent();
      const len = this.buf.readUInt32LE(0);
      if (len < REQ_FIXED || len > this.maxFrame) {
        const e =
          len > this.maxFrame
            ? new ApiError(
                413,
                "too-large",
                `a frame of ${len} bytes is over the limit of ${this.maxFrame} bytes`,
              )
            : badRequest(`a frame of ${len} bytes is too short`);
        return this.fail(e);
      }
      if (this.buf.length < 4 + len) {
        this.want = 4 + len;
        this.pending = [this.buf];
        this.pendingBytes = this.buf.length;
        this.buf = Buffer.alloc(0);
        this.partialFrame();
        return;
      }
      this.framePartial = false;
      const frame = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      this.handle(frame);
    }
  }

  /**
   * A frame has begun and not arrived whole: it must within frameTimeoutMs, else the connection is
   * closed (an authenticated client would otherwise hold up to a frame's worth of memory for ever).
   * Whole frames, the usual case, never get here: nothing is done per request.
   */
  private partialFrame(): void {
    if (this.framePartial) return; // (its clock runs from its first byte)
    this.framePartial = true;
    if (this.frameTimer) this.frameTimer.refresh();
    else {
      this.frameTimer = setTimeout(() => this.frameTimedOut(), this.agent.opts.frameTimeoutMs ?? 30_000);
      this.frameTimer.unref();
    }
  }

  private frameTimedOut(): void {
    // the frame it was set for completed meanwhile, or reading is paused for the client to read its
    // answers (not the frame's fault): nothing to do
    if (this.closed || !this.framePartial || this.paused) return;
    const got = this.want > 0 ? this.pendingBytes : this.buf.length;
    const of = this.want > 0 ? ` of ${this.want}` : "";
    this.fail(
      new ApiError(
        408,
        "frame-timeout",
        `a frame did not arrive whole within ${(this.agent.opts.frameTimeoutMs ?? 30_000) / 1000} s (${got}${of} bytes received); the connection is closed: reconnect and send it again`,
      ),
    );
  }

  /**
   * Stops reading (the client's requests wait in its socket, then in the kernel: TCP's flow control
   * holds the client back) until the answers queued have been sent.
   */
  private pauseUntilSent(): void {
    this.paused = true;
    this.socket.pause();
    // (writableLength above the high-water mark means a write returned false: "drain" will come)
    this.socket.once("drain", () => {
      this.paused = false;
      // a frame begun before the pause has its whole time again from now: its timeout, had it fired
      // meanwhile, was ignored (the wait was not the frame's fault), and must not be lost
      this.framePartial = false;
      this.readFrames();
      if (this.paused || this.closed) return;
      this.socket.resume();
      this.endIfDone();
    });
  }

  /** After the client ended its side: ends the agent's once every request read has its answer written. */
  private endIfDone(): void {
    if (this.peerEnded && this.inFlight === 0 && !this.paused && !this.closed) {
      this.closed = true;
      this.socket.end();
    }
  }

  private refuseHello(): void {
    this.closed = true;
    this.agent.metrics.countRequest("binary-auth", 401);
    this.closeWith(Buffer.concat([MAGIC, Buffer.from([1])]));
  }

  /**
   * A malformed stream: reads nothing more (the framing cannot be trusted any more), answers with id 0
   * and closes — after the writes in flight are answered: they were read whole and will be applied,
   * and a client that never got their answers could not tell.
   */
  private fail(err: ApiError): void {
    this.closed = true;
    const last = answer(0, STATUS_ERROR, err.status, 0, 0, errorBody(err));
    if (this.inFlight === 0) return this.closeWith(last);
    this.buf = Buffer.alloc(0);
    this.pending = [];
    this.lastAnswer = last;
  }

  /** A write was answered: the connection ends or closes now if it waited for that. */
  private writeAnswered(): void {
    if (this.inFlight > 0) return;
    if (this.lastAnswer) {
      // (a peer that is gone has nobody to read it)
      if (this.socket.writable) this.closeWith(this.lastAnswer);
      else this.socket.destroy();
      this.lastAnswer = undefined;
    } else if (this.peerEnded) this.endIfDone();
  }

  /** Sends the last answer, then closes both ways: a peer that keeps sending is not read any more. */
  private closeWith(last: Buffer): void {
    this.buf = Buffer.alloc(0);
    this.pending = [];
    this.socket.end(last, () => this.socket.destroy());
  }

  private handle(frame: Buffer): void {
    const id = frame.readUInt32LE(0);
    const op = frame[4];
    const sl = frame[5];
    const kl = frame.readUInt16LE(6);
    const zl = frame[8];
    const flags = frame[9];
    const epoch = frame.readDoubleLE(10);
    const opName = op === OP_GET ? "get" : op === OP_PUT ? "put" : op === OP_DELETE ? "delete" : "unknown";
    let shardId: string, key: string, zone: string;
    const idl = flags & FLAG_WRITE_ID ? WRITE_ID_BYTES : 0;
    if (REQ_FIXED + sl + kl + zl + idl > frame.length)
      return this.fail(badRequest("the frame's lengths do not add up"));
    {
      // lenient decoding is safe here: bad UTF-8 becomes U+FFFD, which no shard id or zone
      // matches and which validateKey refuses in a key
      let p = REQ_FIXED;
      shardId = frame.toString("utf8", p, (p += sl));
      key = frame.toString("utf8", p, (p += kl));
      zone = frame.toString("utf8", p, (p += zl));
    }
    const idAt = REQ_FIXED + sl + kl + zl;
    // a copy: the id outlives the connection's buffer (the shard's in-flight table keeps it)
    const writeId = idl ? Buffer.from(frame.subarray(idAt, idAt + idl)) : undefined;
    const value = frame.subarray(idAt + idl);
    try {
      if (this.agent.stopping) throw new ApiError(503, "shutting-down", "the agent is shutting down");
      if (opName === "unknown") throw badRequest(`unknown op ${op}`);
      if (flags & ~FLAG_WRITE_ID) throw badRequest(`unknown flags ${flags}`);
      if (writeId && op === OP_GET) throw badRequest("a get carries no write id");
      const write = op !== OP_GET;
      const { shard } = checkShardAccess(this.agent, shardId, epoch, write);
      const segment = checkKey(this.agent, shard, key);
      const zi = zoneIndex(this.agent, zone);
      if (op === OP_PUT && value.length > this.agent.opts.maxValueBytes) {
        throw new ApiError(
          413,
          "too-large",
          `the value is ${value.length} bytes; the limit is ${this.agent.opts.maxValueBytes} bytes`,
        );
      }
      if (op !== OP_PUT && value.length > 0) throw badRequest(`a ${opName} carries no value`);
      shard.raiseEpoch(epoch);
      if (!write) {
        // (copied into the answer at once)
        const v = shard.peek(key);
        this.agent.windows.record(segment, false, zi, Date.now());
        this.send(
          opName,
          v
            ? answer(id, STATUS_OK, 200, v.lsn, shard.meta.epoch, v.value)
            : answer(id, STATUS_NOT_FOUND, 404, 0, shard.meta.epoch),
        );
        return;
      }
      // copy the value out of the connection's buffer: the state keeps it
      const w =
        op === OP_PUT
          ? { op: "put" as const, key, value: Buffer.from(value), writeId }
          : { op: "delete" as const, key, writeId };
      this.inFlight++;
      shard.write([w]).then(
        (rs) => {
          this.inFlight--;
          const r = rs[0];
          this.agent.windows.record(segment, true, zi, Date.now());
          this.send(
            opName,
            answer(
              id,
              STATUS_OK,
              200,
              r.lsn,
              shard.meta.epoch,
              op === OP_DELETE ? Buffer.from([r.existed ? 1 : 0]) : undefined,
              r.duplicate ? FLAG_DUPLICATE : 0,
            ),
          );
          this.writeAnswered();
        },
        (err: unknown) => {
          this.inFlight--;
          const e = writeFailed(shard, err);
          this.reply(
            id,
            opName,
            e instanceof ApiError
              ? e
              : new ApiError(500, "internal", `write failed: ${(err as Error).message}`),
          );
          this.writeAnswered();
        },
      );
    } catch (err) {
      this.reply(
        id,
        opName,
        err instanceof ApiError ? err : new ApiError(500, "internal", (err as Error).message),
      );
    }
  }

  private reply(id: number, op: string, err: ApiError): void {
    const epoch = typeof err.extra.epoch === "number" ? err.extra.epoch : 0;
    this.send(op, answer(id, STATUS_ERROR, err.status, 0, epoch, errorBody(err)));
  }

  private send(op: string, frame: Buffer): void {
    this.agent.metrics.countRequest(
      op === "get" ? "binary-get" : op === "put" ? "binary-put" : `binary-${op}`,
      frame.readUInt16LE(10),
    );
    // (not after the connection ended or failed: a late answer has nobody to go to)
    if (this.socket.writable) this.socket.write(frame);
  }
}

function errorBody(err: ApiError): Buffer {
  return Buffer.from(JSON.stringify({ error: err.code, message: err.message, ...err.extra }));
}

export function answer(
  id: number,
  status: number,
  httpStatus: number,
  lsn: number,
  epoch: number,
  payload?: Buffer,
  flags = 0,
): Buffer {
  const plen = payload?.length ?? 0;
  const out = Buffer.allocUnsafe(4 + RES_FIXED + plen);
  out.writeUInt32LE(RES_FIXED + plen, 0);
  out.writeUInt32LE(id, 4);
  out[8] = status;
  out[9] = flags;
  out.writeUInt16LE(httpStatus, 10);
  out.writeDoubleLE(lsn, 12);
  out.writeDoubleLE(epoch, 20);
  if (payload) payload.copy(out, 4 + RES_FIXED);
  return out;
}

/** Encodes a request frame (for clients, the benchmark and tests); `writeId` is 16 bytes. */
export function encodeRequest(
  id: number,
  op: number,
  shardId: string,
  key: string,
  epoch: number,
  zone = "",
  value?: Buffer,
  writeId?: Buffer,
): Buffer {
  const s = Buffer.from(shardId);
  const k = Buffer.from(key);
  const z = Buffer.from(zone);
  if (writeId && writeId.length !== WRITE_ID_BYTES)
    throw new RangeError(`a write id is ${WRITE_ID_BYTES} bytes, not ${writeId.length}`);
  const vlen = value?.length ?? 0;
  const len = REQ_FIXED + s.length + k.length + z.length + (writeId ? WRITE_ID_BYTES : 0) + vlen;
  const out = Buffer.allocUnsafe(4 + len);
  out.writeUInt32LE(len, 0);
  out.writeUInt32LE(id, 4);
  out[8] = op;
  out[9] = s.length;
  out.writeUInt16LE(k.length, 10);
  out[12] = z.length;
  out[13] = writeId ? FLAG_WRITE_ID : 0;
  out.writeDoubleLE(epoch, 14);
  let p = 22;
  p += s.copy(out, p);
  p += k.copy(out, p);
  p += z.copy(out, p);
  if (writeId) p += writeId.copy(out, p);
  if (value) value.copy(out, p);
  return out;
}

export interface DecodedAnswer {
  id: number;
  status: number;
  httpStatus: number;
  lsn: number;
  epoch: number;
  /** The write id was known: the original write's answer, nothing appended (FLAG_DUPLICATE). */
  duplicate: boolean;
  payload: Buffer;
}

/** Decodes one answer frame at the start of `buf`, or returns undefined when it is not complete yet. */
export function decodeAnswer(buf: Buffer): { answer: DecodedAnswer; length: number } | undefined {
  if (buf.length < 4) return undefined;
  const len = buf.readUInt32LE(0);
  if (buf.length < 4 + len) return undefined;
  return {
    length: 4 + len,
    answer: {
      id: buf.readUInt32LE(4),
      status: buf[8],
      httpStatus: buf.readUInt16LE(10),
      lsn: buf.readDoubleLE(12),
      epoch: buf.readDoubleLE(20),
      duplicate: (buf[9] & FLAG_DUPLICATE) !== 0,
      payload: buf.subarray(4 + RES_FIXED, 4 + len),
    },
  };
}
