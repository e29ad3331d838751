/**
 * `npm run bench -- agent`: the agent's durable append throughput and latency
 * (fsync on every acknowledged write, group commit) over loopback with C
 * concurrent keep-alive clients and V-byte values, side by side with Redis
 * (`appendonly yes`, `appendfsync always`, driven by redis-benchmark at the
 * same concurrency and value size); then the recovery time of a 1 GB log.
 *
 * The binary protocol and Redis run in alternating rounds (agent then Redis,
 * then Redis then agent, …), each side's figures the median of its rounds:
 * on a shared machine one run of each, minutes apart, measures the
 * neighbours as much as the servers. The HTTP API runs once.
 *
 * Environment: BENCH_CONCURRENCY (50), BENCH_VALUE_BYTES (100),
 * BENCH_SECONDS (10, per round), BENCH_ROUNDS (3),
 * BENCH_REDIS_REQUESTS (derived from the agent's rate),
 * BENCH_RECOVERY_BYTES (1 GiB; smaller for quick runs — the JSON says which),
 * BENCH_SHARDS (1: one log, like Redis's one file; N: the segments split
 * between N shards of the one agent, each key sent to its own; C load
 * generator only).
 */
import { spawn, execFile, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { Agent as HttpAgent, request } from "node:http";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { Segmenter } from "../src/engine/segmenter.js";
import { AGENT_NODE_FLAGS } from "../src/agent/node-flags.js";
import { decodeAnswer, encodeRequest, MAGIC, OP_PUT } from "../src/agent/binary.js";
import { freePort, stopChild, writeShardLog } from "./_shards.js";
import { emit, log, now, percentile, round } from "./_util.js";

const C = Number(process.env.BENCH_CONCURRENCY ?? 50);
const V = Number(process.env.BENCH_VALUE_BYTES ?? 100);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1)
  throw new Error(`BENCH_ROUNDS must be a whole number ≥ 1, not ${process.env.BENCH_ROUNDS}`);
const RECOVERY_BYTES = Number(process.env.BENCH_RECOVERY_BYTES ?? 1024 ** 3);
const SEGMENTS = 4096;
const SHARDS = Number(process.env.BENCH_SHARDS ?? 1);
if (!(Number.isInteger(SHARDS) && SHARDS >= 1 && SHARDS <= 64 && SEGMENTS % SHARDS === 0))
  throw new Error(`BENCH_SHARDS must divide ${SEGMENTS} (1, 2, 4, … 64), not ${process.env.BENCH_SHARDS}`);
/** The agent's own flags (as up --local and deploy give them), then the run's (a later flag wins). */
const AGENT_ARGS = [
  ...AGENT_NODE_FLAGS,
  ...(process.env.BENCH_AGENT_NODE_ARGS ?? "").split(" ").filter(Boolean),
];
const TOKEN = "bench-token";
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const execFileAsync = promisify(execFile);

function startAgent(dataDir: string, port: number, extra: string[] = []): ChildProcess {
  mkdirSync(join(dataDir, ".."), { recursive: true });
  const tokenFile = join(dataDir, "..", "token");
  writeFileSync(tokenFile, TOKEN, { mode: 0o600 });
  return spawn(
    process.execPath,
    [
      // e.g. BENCH_AGENT_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the agent
      ...AGENT_ARGS,
      "--import",
      pathToFileURL(join(root, "node_modules/tsx/dist/loader.mjs")).href,
      join(root, "bin/shardctl.ts"),
      "--data-dir",
      dataDir,
      "agent",
      "--listen",
      `127.0.0.1:${port}`,
      "--zone",
      "a",
      "--node-id",
      "bench",
      "--token-file",
      tokenFile,
      "--segments",
      String(SEGMENTS),
      ...extra,
    ],
    { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, SHARDCTL_ZONES: "a,b,c" } },
  );
}

/** A minimal HTTP/1.1 keep-alive connection: writes a request, resolves with the status of the answer. */
class RawConn {
  private buf: Buffer = Buffer.alloc(0);
  private waiting?: (status: number) => void;
  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on("data", (c: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
      const end = this.buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = this.buf.toString("latin1", 0, end);
      const m = /content-length: (\d+)/i.exec(head);
      const total = end + 4 + (m ? Number(m[1]) : 0);
      if (this.buf.length < total) return;
      this.buf = this.buf.subarray(total);
      const w = this.waiting;
      this.waiting = undefined;
      w?.(Number(head.slice(9, 12)));
    });
  }
  static open(port: number): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const s = connect(port, "127.0.0.1", () => resolve(new RawConn(s)));
      s.once("error", reject);
    });
  }
  send(req: Buffer): Promise<number> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(req);
    });
  }
  close(): void {
    this.socket.destroy();
  }
}

/** A binary-protocol connection (src/agent/binary.ts): hello, then one request in flight. */
class BinConn {
  private buf: Buffer = Buffer.alloc(0);
  private waiting?: (status: number) => void;
  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on("data", (c: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
      const d = decodeAnswer(this.buf);
      if (!d) return;
      this.buf = this.buf.subarray(d.length);
      const w = this.waiting;
      this.waiting = undefined;
      w?.(d.answer.httpStatus);
    });
  }
  static open(port: number): Promise<BinConn> {
    return new Promise((resolve, reject) => {
      const s = connect(port, "127.0.0.1", () => {
        const t = Buffer.from(TOKEN);
        const hello = Buffer.alloc(6);
        MAGIC.copy(hello);
        hello.writeUInt16LE(t.length, 4);
        s.write(Buffer.concat([hello, t]));
        s.once("data", (c: Buffer) =>
          c[4] === 0 ? resolve(new BinConn(s)) : reject(new Error("hello refused")),
        );
      });
      s.once("error", reject);
    });
  }
  send(req: Buffer): Promise<number> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(req);
    });
  }
  close(): void {
    this.socket.destroy();
  }
}

/**
 * The load generator in C (compiled at run time with \`cc\` when there is one),
 * the same shape as redis-benchmark: C keep-alive connections on one epoll
 * loop, one request in flight each. On a 2-core machine a JavaScript load
 * generator takes CPU the agent needs and measures itself; redis-benchmark is
 * C, so the agent gets a C generator too. Falls back to the JS one without cc.
 */
const LOAD_C = String.raw`#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  int fd, state, done, resend;
  unsigned char rbuf[1 << 16];
  size_t rlen;
  double t0, t_read;
} conn_t;

static int port, V, http;
static double warm_end, end_t;
static const char *token;
static unsigned long seq = 0, errors = 0, count = 0;
static double *lat;
static size_t lat_cap = 1 << 20;
static unsigned char *value;
/* per key number (key:N, N < 100000), the shard it belongs to (shard-1, shard-2, ...); NULL: shard-1 */
static unsigned char *shard_of;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static void send_all(int fd, const void *b, size_t n) {
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      perror("write");
      exit(1);
    }
    b = (const char *)b + w;
    n -= (size_t)w;
  }
}
static void send_req(conn_t *c) {
  static unsigned char buf[1 << 17];
  char key[64];
  unsigned long kn = seq++ % 100000;
  int kl = snprintf(key, sizeof key, "key:%lu", kn);
  char shard[16];
  int sl = snprintf(shard, sizeof shard, "shard-%d", shard_of ? shard_of[kn] : 1);
  size_t n;
  if (http) {
    n = (size_t)snprintf((char *)buf, sizeof buf,
                         "PUT /v1/shards/%s/keys/%s HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\n"
                         "x-shard-epoch: 1\r\nx-origin-zone: a\r\ncontent-length: %d\r\n\r\n",
                         shard, key, token, V);
    memcpy(buf + n, value, (size_t)V);
    n += (size_t)V;
  } else {
    const char *zone = "a";
    uint32_t zl = 1, len = 18 + (uint32_t)sl + (uint32_t)kl + zl + (uint32_t)V, id = (uint32_t)seq;
    uint16_t k16 = (uint16_t)kl;
    double epoch = 1.0;
    memcpy(buf, &len, 4);
    memcpy(buf + 4, &id, 4);
    buf[8] = 2;
    buf[9] = (unsigned char)sl;
    memcpy(buf + 10, &k16, 2);
    buf[12] = (unsigned char)zl;
    buf[13] = 0;
    memcpy(buf + 14, &epoch, 8);
    n = 22;
    memcpy(buf + n, shard, (size_t)sl), n += (size_t)sl;
    memcpy(buf + n, key, (size_t)kl), n += (size_t)kl;
    memcpy(buf + n, zone, zl), n += zl;
    memcpy(buf + n, value, (size_t)V), n += (size_t)V;
  }
  c->t0 = now_ms();
  send_all(c->fd, buf, n);
}
/* An answer's latency is taken when its read event is handled, before the read (as
 * redis-benchmark does); the next request goes out after every ready connection was read,
 * not between them (as redis-benchmark's writes wait for the next turn of its loop), so
 * that answers arriving together are not timed behind the requests sent in between. */
static void complete(conn_t *c, int status) {
  double t = c->t_read;
  if (status != 200) errors++;
  else if (c->t0 >= warm_end && t <= end_t) {
    if (count == lat_cap) lat = realloc(lat, (lat_cap *= 2) * sizeof(double));
    lat[count++] = t - c->t0;
  }
  if (t < end_t) c->resend = 1;
  else c->done = 1;
}
/* returns bytes consumed by one complete answer, 0 if incomplete */
static size_t parse(conn_t *c, int *status) {
  if (!http) {
    if (c->rlen < 4) return 0;
    uint32_t len;
    memcpy(&len, c->rbuf, 4);
    if (c->rlen < 4 + (size_t)len) return 0;
    uint16_t st;
    memcpy(&st, c->rbuf + 10, 2);
    *status = st;
    return 4 + len;
  }
  unsigned char *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
  if (!e) return 0;
  size_t head = (size_t)(e - c->rbuf) + 4;
  size_t clen = 0;
  for (unsigned char *p = c->rbuf; p + 16 < e; p++) {
    if (strncasecmp((char *)p, "\r\ncontent-length:", 17) == 0) {
      clen = (size_t)strtoul((char *)p + 17, NULL, 10);
      break;
    }
  }
  if (c->rlen < head + clen) return 0;
  *status = atoi((char *)c->rbuf + 9);
  return head + clen;
}

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: load PORT CONNS VALUE_BYTES WARM_S SECONDS TOKEN http|binary [SHARD_FILE]\n");
    return 2;
  }
  port = atoi(argv[1]);
  int C = atoi(argv[2]);
  V = atoi(argv[3]);
  double warm = atof(argv[4]), secs = atof(argv[5]);
  token = argv[6];
  http = strcmp(argv[7], "http") == 0;
  if (argc > 8) {
    FILE *f = fopen(argv[8], "rb");
    shard_of = malloc(100000);
    if (!f || fread(shard_of, 1, 100000, f) != 100000) {
      fprintf(stderr, "cannot read the shard file %s\n", argv[8]);
      return 2;
    }
    fclose(f);
  }
  value = malloc((size_t)V);
  memset(value, 'x', (size_t)V);
  lat = malloc(lat_cap * sizeof(double));
  int ep = epoll_create1(0);
  conn_t *conns = calloc((size_t)C, sizeof(conn_t));
  for (int i = 0; i < C; i++) {
    conn_t *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
      perror("connect");
      return 1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  }
  double start = now_ms();
  warm_end = start + warm * 1000;
  end_t = warm_end + secs * 1000;
  for (int i = 0; i < C; i++) {
    conn_t *c = &conns[i];
    if (http) {
      c->state = 1;
      send_req(c);
    } else {
      unsigned char hello[6 + 4096];
      uint16_t tl = (uint16_t)strlen(token);
      memcpy(hello, "SCB1", 4);
      memcpy(hello + 4, &tl, 2);
      memcpy(hello + 6, token, tl);
      send_all(c->fd, hello, 6 + (size_t)tl);
    }
  }
  int active = C;
  struct epoll_event evs[64];
  while (active > 0) {
    int n = epoll_wait(ep, evs, 64, 1000);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      c->t_read = now_ms();
      ssize_t r = read(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen);
      if (r <= 0) {
        fprintf(stderr, "connection closed\n");
        return 1;
      }
      c->rlen += (size_t)r;
      if (c->state == 0) {
        if (c->rlen < 5) continue;
        if (c->rbuf[4] != 0) {
          fprintf(stderr, "hello refused\n");
          return 1;
        }
        memmove(c->rbuf, c->rbuf + 5, c->rlen - 5);
        c->rlen -= 5;
        c->state = 1;
        send_req(c);
        continue;
      }
      int status;
      size_t used;
      while (!c->done && (used = parse(c, &status)) > 0) {
        memmove(c->rbuf, c->rbuf + used, c->rlen - used);
        c->rlen -= used;
        complete(c, status);
        if (c->done) active--;
      }
    }
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (c->resend) {
        c->resend = 0;
        send_req(c);
      }
    }
  }
  qsort(lat, count, sizeof(double), cmp);
  double p50 = count ? lat[(size_t)(0.5 * count)] : 0, p99 = count ? lat[(size_t)(0.99 * count)] : 0;
  printf("{\"ops\":%.1f,\"p50\":%.3f,\"p99\":%.3f,\"errors\":%lu,\"count\":%lu}\n", count / secs, p50, p99, errors, count);
  return 0;
}
`;

function compileLoadGenerator(): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), "shardctl-bench-load-"));
  writeFileSync(join(dir, "load.c"), LOAD_C);
  try {
    execFileSync("cc", ["-O2", "-o", join(dir, "load"), join(dir, "load.c")], { stdio: "pipe" });
    return join(dir, "load");
  } catch (err) {
    log(`no C compiler (${(err as Error).message.split("\n")[0]}): using the JavaScript load generator`);
    return undefined;
  }
}

const pool = new HttpAgent({ keepAlive: true, maxSockets: C + 4 });

function call(
  port: number,
  method: string,
  path: string,
  body?: Buffer | string,
  headers: Record<string, string> = {},
) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const h: Record<string, string | number> = { authorization: `Bearer ${TOKEN}`, ...headers };
    if (body !== undefined) h["content-length"] = Buffer.byteLength(body);
    const req = request({ host: "127.0.0.1", port, method, path, headers: h, agent: pool }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function waitHealthy(port: number, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await call(port, "GET", "/health");
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error("agent did not become healthy");
    await sleep(20);
  }
}

/** Logs the group commits' mean size and write time from the agent's /metrics; returns its resident memory (MiB) at the end of the run. */
async function logRunMetrics(port: number, protocol: string): Promise<number | undefined> {
  const metrics = await call(port, "GET", "/metrics");
  const rss = /^shardctl_agent_process_resident_memory_bytes (\S+)$/m.exec(metrics.body);
  const sum = /shardctl_agent_group_commit_entries_sum (\S+)/.exec(metrics.body);
  const count = /shardctl_agent_group_commit_entries_count (\S+)/.exec(metrics.body);
  const syncSum = /shardctl_agent_log_flush_seconds_sum (\S+)/.exec(metrics.body);
  if (sum && count)
    log(
      `agent (${protocol}): mean group commit ${round(Number(sum[1]) / Number(count[1]), 1)} entries per fsync` +
        (syncSum
          ? `, mean write + fsync ${round((Number(syncSum[1]) * 1000) / Number(count[1]), 3)} ms`
          : ""),
    );
  return rss ? Number(rss[1]) / 2 ** 20 : undefined;
}

const loadGenerator = process.env.BENCH_JS_LOAD ? undefined : compileLoadGenerator();
if (SHARDS > 1 && !loadGenerator) throw new Error("BENCH_SHARDS above 1 needs the C load generator (cc)");

async function benchAgent(
  protocol: "http" | "binary",
): Promise<{ ops: number; p50: number; p99: number; errors: number; rssMb?: number }> {
  const dir = mkdtempSync(join(tmpdir(), "shardctl-bench-agent-"));
  const port = await freePort();
  const binPort = await freePort();
  const agent = startAgent(join(dir, "data"), port, ["--listen-binary", `127.0.0.1:${binPort}`]);
  try {
    await waitHealthy(port);
    // one shard holding every segment: one log, like Redis's one append-only file (BENCH_SHARDS:
    // the segments split evenly between that many shards, each key sent to its own)
    const per = SEGMENTS / SHARDS;
    for (let i = 0; i < SHARDS; i++) {
      const created = await call(
        port,
        "PUT",
        `/v1/admin/shards/shard-${i + 1}`,
        JSON.stringify({ epoch: 1, ranges: [[i * per, (i + 1) * per]] }),
      );
      if (created.status !== 201) throw new Error(`cannot create shard-${i + 1}: ${created.body}`);
    }
    const shardFile = join(dir, "shard-of-key");
    if (SHARDS > 1) {
      const segmenter = new Segmenter(SEGMENTS);
      writeFileSync(
        shardFile,
        Uint8Array.from({ length: 100_000 }, (_, k) => 1 + Math.floor(segmenter.segmentOf(`key:${k}`) / per)),
      );
    }
    if (loadGenerator) {
      log(
        `agent (${protocol}): C load generator, ${C} connections, ${V}-byte values, 2 s warm-up + ${SECONDS} s, fsync on, ${SHARDS} shard${SHARDS > 1 ? "s" : ""}`,
      );
      const { stdout } = await execFileAsync(loadGenerator, [
        String(protocol === "http" ? port : binPort),
        String(C),
        String(V),
        "2",
        String(SECONDS),
        TOKEN,
        protocol,
        ...(SHARDS > 1 ? [shardFile] : []),
      ]);
      const r = JSON.parse(stdout.trim()) as { ops: number; p50: number; p99: number; errors: number };
      const rssMb = await logRunMetrics(port, protocol);
      return { ops: r.ops, p50: r.p50, p99: r.p99, errors: r.errors, rssMb };
    }
    const value = Buffer.alloc(V, "x");
    const lat: number[] = [];
    let errors = 0;
    let seq = 0;
    // raw keep-alive connections, one request in flight each (like redis-benchmark without -P):
    // node's http client costs ~0.3 ms of CPU per request, which would measure the client, not the agent
    const conns = await Promise.all(
      Array.from({ length: C }, () => (protocol === "http" ? RawConn.open(port) : BinConn.open(binPort))),
    );
    const runFor = async (ms: number, record: boolean) => {
      const end = now() + ms;
      await Promise.all(
        conns.map(async (conn) => {
          while (now() < end) {
            const key = `key:${seq++ % 100_000}`;
            const req =
              protocol === "http"
                ? Buffer.concat([
                    Buffer.from(
                      `PUT /v1/shards/shard-1/keys/${encodeURIComponent(key)} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${TOKEN}\r\n` +
                        `x-shard-epoch: 1\r\nx-origin-zone: a\r\ncontent-length: ${value.length}\r\n\r\n`,
                    ),
                    value,
                  ])
                : encodeRequest(seq, OP_PUT, "shard-1", key, 1, "a", value);
            const t0 = now();
            const status = await conn.send(req);
            if (status !== 200) errors++;
            if (record) lat.push(now() - t0);
          }
        }),
      );
    };
    log(
      `agent (${protocol}): warm-up 2 s, then ${SECONDS} s of PUTs, ${C} clients, ${V}-byte values, fsync on`,
    );
    await runFor(2000, false);
    const t0 = now();
    await runFor(SECONDS * 1000, true);
    const elapsed = (now() - t0) / 1000;
    const sorted = Float64Array.from(lat).sort();
    const rssMb = await logRunMetrics(port, protocol);
    for (const c of conns) c.close();
    return {
      ops: lat.length / elapsed,
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      errors,
      rssMb,
    };
  } finally {
    await stopChild(agent);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function benchRedis(
  requests: number,
): Promise<{ ops: number; p50: number; p99: number } | { error: string }> {
  const dir = mkdtempSync(join(tmpdir(), "shardctl-bench-redis-"));
  const port = await freePort();
  const redis = spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--appendonly",
      "yes",
      "--appendfsync",
      "always",
      "--save",
      "",
    ],
    { stdio: "ignore" },
  );
  try {
    for (let i = 0; i < 100; i++) {
      try {
        await execFileAsync("redis-cli", ["-p", String(port), "ping"]);
        break;
      } catch {
        await sleep(50);
      }
    }
    log(`redis: redis-benchmark -t set -c ${C} -d ${V} -n ${requests} (appendfsync always)`);
    const { stdout } = await execFileAsync(
      "redis-benchmark",
      [
        "-p",
        String(port),
        "-t",
        "set",
        "-c",
        String(C),
        "-d",
        String(V),
        "-n",
        String(requests),
        "-r",
        "100000",
        "-q",
        "--csv",
        "--precision",
        "3",
      ],
      { maxBuffer: 1 << 20 },
    );
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    const line = stdout.split("\n").find((l) => l.startsWith('"SET"'));
    if (!line) return { error: `unexpected redis-benchmark output: ${stdout.slice(0, 200)}` };
    const f = line.split(",").map((x) => x.replace(/"/g, ""));
    return { ops: Number(f[1]), p50: Number(f[4]), p99: Number(f[6]) };
  } catch (err) {
    return { error: (err as Error).message };
  } finally {
    redis.kill("SIGTERM");
    await sleep(200);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function timeToHealthy(dataDir: string): Promise<number> {
  const port = await freePort();
  const t0 = now();
  const agent = startAgent(dataDir, port, ["--snapshot-bytes", String(1024 ** 4)]);
  try {
    await waitHealthy(port);
    return (now() - t0) / 1000;
  } finally {
    await stopChild(agent);
  }
}

async function benchRecovery(): Promise<{
  seconds: number;
  emptySeconds: number;
  bytes: number;
  entries: number;
}> {
  const dir = mkdtempSync(join(tmpdir(), "shardctl-bench-recovery-"));
  try {
    const emptySeconds = await timeToHealthy(join(dir, "empty"));
    log(`recovery: generating a ${round(RECOVERY_BYTES / 1024 ** 2, 0)} MiB log`);
    const g = writeShardLog(join(dir, "data", "shards", "shard-1"), RECOVERY_BYTES, {
      shardId: "shard-1",
      segments: SEGMENTS,
      valueBytes: 1024,
    });
    const seconds = await timeToHealthy(join(dir, "data"));
    log(
      `recovery: ${g.entries} entries, ${round(g.bytes / 1024 ** 2, 0)} MiB: healthy after ${round(seconds, 2)} s (an empty agent: ${round(emptySeconds, 2)} s)`,
    );
    return { seconds, emptySeconds, ...g };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const h = await benchAgent("http");
log(
  `agent (http): ${round(h.ops, 0)} ops/s, p50 ${round(h.p50, 2)} ms, p99 ${round(h.p99, 2)} ms, ${h.errors} errors`,
);
type Figures = { ops: number; p50: number; p99: number };
const rounds: { agent: Figures & { errors: number; rssMb?: number }; redis: Figures | { error: string } }[] =
  [];
for (let i = 0; i < ROUNDS; i++) {
  log(`round ${i + 1} of ${ROUNDS}`);
  const runAgent = async () => {
    const b = await benchAgent("binary");
    log(
      `agent (binary): ${round(b.ops, 0)} ops/s, p50 ${round(b.p50, 2)} ms, p99 ${round(b.p99, 2)} ms, ${b.errors} errors`,
    );
    return b;
  };
  const runRedis = async (agentOps: number) => {
    const requests = Number(
      process.env.BENCH_REDIS_REQUESTS ?? Math.max(20_000, Math.round(agentOps * SECONDS)),
    );
    const r = await benchRedis(requests);
    if ("error" in r) log(`redis: ${r.error}`);
    else log(`redis: ${round(r.ops, 0)} ops/s, p50 ${r.p50} ms, p99 ${r.p99} ms`);
    return r;
  };
  // alternate which goes first, so that a machine getting busier or quieter favours neither
  if (i % 2 === 0) {
    const agent = await runAgent();
    rounds.push({ agent, redis: await runRedis(agent.ops) });
  } else {
    const redis = await runRedis(rounds[0].agent.ops);
    rounds.push({ agent: await runAgent(), redis });
  }
}
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const b = {
  ops: median(rounds.map((x) => x.agent.ops)),
  p50: median(rounds.map((x) => x.agent.p50)),
  p99: median(rounds.map((x) => x.agent.p99)),
  errors: rounds.reduce((n, x) => n + x.agent.errors, 0),
};
const redisRounds = rounds.map((x) => x.redis).filter((r): r is Figures => !("error" in r));
const redisError = rounds.map((x) => x.redis).find((r): r is { error: string } => "error" in r);
const r: Figures | { error: string } = redisError ?? {
  ops: median(redisRounds.map((x) => x.ops)),
  p50: median(redisRounds.map((x) => x.p50)),
  p99: median(redisRounds.map((x) => x.p99)),
};
/** Rounds where the agent matched Redis on both counts (throughput at least Redis's, p99 no worse). */
const roundsMet = rounds.filter(
  (x) => !("error" in x.redis) && x.agent.ops >= x.redis.ops && x.agent.p99 <= x.redis.p99,
).length;
if (!("error" in r))
  log(
    `medians of ${ROUNDS} rounds: agent (binary) ${round(b.ops, 0)} ops/s, p99 ${round(b.p99, 2)} ms; ` +
      `redis ${round(r.ops, 0)} ops/s, p99 ${round(r.p99, 2)} ms; both goals met in ${roundsMet} of ${ROUNDS} rounds`,
  );
const rec = await benchRecovery();
pool.destroy();
if (loadGenerator) rmSync(dirname(loadGenerator), { recursive: true, force: true });
const is1g = rec.bytes >= 1024 ** 3;
const best = b.ops >= h.ops ? { protocol: "binary", ...b } : { protocol: "http", ...h };
emit({
  bench: "agent",
  concurrency: C,
  value_bytes: V,
  shards: SHARDS,
  seconds: SECONDS,
  // the faster of the agent's two protocols (both are listed below)
  protocol: best.protocol,
  load_generator: loadGenerator ? "c" : "node",
  ops_per_s: round(best.ops, 0),
  p50_ms: round(best.p50, 3),
  p99_ms: round(best.p99, 3),
  http_ops_per_s: round(h.ops, 0),
  http_p50_ms: round(h.p50, 3),
  http_p99_ms: round(h.p99, 3),
  binary_ops_per_s: round(b.ops, 0),
  binary_p50_ms: round(b.p50, 3),
  binary_p99_ms: round(b.p99, 3),
  errors: h.errors + b.errors,
  // the agent's resident memory at the end of each binary round (100,000 keys of V bytes written)
  agent_rss_mb: rounds.map((x) => (x.agent.rssMb === undefined ? null : round(x.agent.rssMb, 1))),
  rounds: ROUNDS,
  rounds_met: "error" in r ? null : roundsMet,
  round_figures: rounds.map((x) => ({
    ops_per_s: round(x.agent.ops, 0),
    p99_ms: round(x.agent.p99, 3),
    redis_ops_per_s: "error" in x.redis ? null : round(x.redis.ops, 0),
    redis_p99_ms: "error" in x.redis ? null : x.redis.p99,
  })),
  redis_ops_per_s: "error" in r ? null : round(r.ops, 0),
  redis_p50_ms: "error" in r ? null : r.p50,
  redis_p99_ms: "error" in r ? null : r.p99,
  throughput_ratio: "error" in r ? null : round(best.ops / r.ops, 3),
  p99_ratio: "error" in r ? null : round(best.p99 / r.p99, 3),
  agent_node_flags: AGENT_ARGS.join(" "),
  recovery_log_bytes: rec.bytes,
  recovery_entries: rec.entries,
  recovery_s: round(rec.seconds, 3),
  recovery_1gb_s: is1g ? round(rec.seconds, 3) : null,
  startup_empty_s: round(rec.emptySeconds, 3),
});
