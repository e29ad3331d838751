/** Request/response helpers for the agent's HTTP API. */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";

/** An error answered as `{error: code, message, ...extra}` with an HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  sendJsonText(res, status, JSON.stringify(body), headers);
}

/** sendJson for a body already in its JSON form. */
export function sendJsonText(
  res: ServerResponse,
  status: number,
  text: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export function sendError(res: ServerResponse, err: ApiError): void {
  sendJson(res, err.status, { error: err.code, message: err.message, ...err.extra }, err.headers);
}

/**
 * Reads a request body of at most `limit` bytes. A declared or actual length
 * above it is a 413 before anything is done with the request.
 */
export function readBody(req: IncomingMessage, limit: number, what: string): Promise<Buffer> {
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(tooLarge(what, `${Number(declared)} bytes`, limit));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on("data", (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > limit) {
        done = true;
        reject(tooLarge(what, `more than ${limit} bytes`, limit));
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      if (done) return;
      done = true;
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    });
    req.on("error", (e) => {
      if (done) return;
      done = true;
      // the client went away before its body ended: its doing, not an internal error (nothing is
      // logged for it, and nothing was done with the request)
      reject(
        req.complete
          ? e
          : new ApiError(
              400,
              "body-incomplete",
              `the connection closed after ${size} bytes of the ${what}, before its end; nothing was done`,
            ),
      );
    });
  });
}

function tooLarge(what: string, size: string, limit: number): ApiError {
  return new ApiError(413, "too-large", `the ${what} is ${size}; the limit is ${limit} bytes`, {
    limit,
  });
}

export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const body = await readBody(req, limit, "request body");
  try {
    return JSON.parse(body.toString("utf8"));
  } catch (err) {
    throw new ApiError(400, "bad-json", `the request body is not valid JSON: ${(err as Error).message}`);
  }
}

export function badRequest(message: string, extra: Record<string, unknown> = {}): ApiError {
  return new ApiError(400, "bad-request", message, extra);
}

/** Parses a non-negative integer field or throws a 400 naming it. */
export function intField(value: unknown, name: string, min = 0): number {
  // safe integers only: an epoch of 1e300 would make every later epoch stale
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw badRequest(`${name} must be an integer from ${min} to 2^53 − 1, got ${JSON.stringify(value)}`);
  }
  return value;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Strict base64 (Buffer.from is lenient and would silently skip bad characters): canonical too,
 * the bits padding leaves over zero ("AB==" is refused, not read as "AA=="), so that one value
 * has one spelling.
 */
export function decodeBase64(s: unknown, name: string): Buffer {
  if (typeof s !== "string" || !BASE64.test(s)) throw badRequest(`${name} must be a base64 string`);
  const bytes = Buffer.from(s, "base64");
  if (bytes.toString("base64") !== s)
    throw badRequest(`${name} must be canonical base64 (the bits the padding leaves over are zero)`);
  return bytes;
}

/** A migration id from a request body: absent, or a short safe token. */
export function optionalMigrationId(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !/^[A-Za-z0-9_.-]{1,128}$/.test(v))
    throw badRequest("migration must be a migration id (letters, digits, _ . -; at most 128)");
  return v;
}

/**
 * The most bytes of request line and headers the agent reads: node's 16 KiB, plus a key of
 * `maxKeyBytes` in the path, percent-encoded (3 characters a byte at most). With the 16 KiB alone, a
 * key the binary protocol and the limit accept was refused over HTTP (431) once limits.maxKeyBytes
 * was raised past ~5,000 bytes: written over one protocol, it could not be read over the other.
 */
export function maxHeaderBytes(maxKeyBytes: number): number {
  return 16 * 1024 + 3 * maxKeyBytes;
}

/** What a request the HTTP parser refused is answered, by node's error code (node's own statuses). */
const CLIENT_ERRORS: Record<string, [number, string, string, string]> = {
  HPE_HEADER_OVERFLOW: [
    431,
    "Request Header Fields Too Large",
    "headers-too-large",
    "the request line and headers are over the limit (16 KiB, plus room for a key of limits.maxKeyBytes percent-encoded)",
  ],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [
    413,
    "Payload Too Large",
    "too-large",
    "the chunk extensions are over the limit",
  ],
  ERR_HTTP_REQUEST_TIMEOUT: [
    408,
    "Request Timeout",
    "request-timeout",
    "the request's headers did not arrive in time",
  ],
};

/** The answer node's server has attached to a connection (undocumented, what node's own handler reads). */
type HttpSocket = Duplex & { _httpMessage?: ServerResponse | null };

const answering = new WeakSet<Duplex>();
const CLIENT_ERROR_LINGER_MS = 1000;

/**
 * The server's `clientError` handler: a request node's parser refused (two Content-Lengths, a
 * Content-Length beside chunked, a bad chunk, headers over the limit, headers that did not arrive in
 * time) is answered like every other error, with a JSON body, and the connection is closed (its
 * framing can no longer be trusted; node's own answer carried no body). The requests read before it
 * are answered first: a write among them is applied, and its client must learn so (node would drop
 * their answers and close at once).
 */
export function answerClientError(err: Error & { code?: string; reason?: string }, socket: Duplex): void {
  // the parser repeats its error for every later chunk: one answer
  if (answering.has(socket)) return;
  answering.add(socket);
  if (err.code === "ECONNRESET" || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, reason, code, message] = CLIENT_ERRORS[err.code ?? ""] ?? [
    400,
    "Bad Request",
    "bad-request",
    `the request is not well-formed HTTP/1.1 (${err.reason ?? err.code ?? err.message}); the connection is closed`,
  ];
  const body = JSON.stringify({ error: code, message });
  const answer = () => {
    const pending = (socket as HttpSocket)._httpMessage;
    // node attaches the next pipelined answer when one finishes (before this listener runs)
    if (pending && !pending.writableFinished) {
      if (pending.req.complete) {
        pending.once("finish", answer);
        return;
      }
      // the bad bytes are in this request's own body: the error is its answer (unless it has begun one)
      if (pending.headersSent) {
        socket.destroy();
        return;
      }
    }
    if (!socket.writable) return; // an answer before said "connection: close", and node ends it
    // closed a moment after the answer is flushed: bytes the client is still sending (the rest of an
    // oversize head) are read and dropped meanwhile, where closing at once would reset the connection
    // and could lose the answer on the client's side (one that does not read it is cut by the idle timeout)
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      () => setTimeout(() => socket.destroy(), CLIENT_ERROR_LINGER_MS).unref(),
    );
  };
  answer();
}
