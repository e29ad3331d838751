/**
 * A migration whose commit reached Consul but whose answer did not (the
 * connection is cut after the commit transaction is forwarded, and Consul
 * cannot be reached for a while after): the coordinator cannot know the
 * outcome, so it must leave the source fenced and the target's prepared copy
 * in place, as its error says, not roll back. Here Consul did apply the
 * commit: a roll-back would have dropped the copy the map names. Recovery
 * then finishes the move, and every acknowledged write is served. The cut is
 * made by a TCP proxy between the coordinator and the real Consul.
 */
import { spawn } from "node:child_process";
import { connect, createServer, type Server, type Socket } from "node:net";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli, repoRoot, shardctlCommand } from "../../helpers/cli.js";
import { startConsulDev, type DevConsul } from "../../helpers/consul.js";
import { processState } from "../../helpers/proc.js";
import { freePortRange, http, tempDir } from "../agent/harness.js";

let consul: DevConsul;
let dir: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  consul = await startConsulDev();
  dir = tempDir("commit-unknown");
  env = {
    SHARDCTL_STORE: "consul",
    CONSUL_HTTP_ADDR: consul.addr,
    SHARDCTL_CONSUL_PREFIX: "commit-unknown/",
    SHARDCTL_DATA_DIR: dir,
    SHARDCTL_SEGMENTS: "16",
    SHARDCTL_ZONES: "a,b",
  };
});

afterAll(async () => {
  await cli(["down", "--timeout", "5"], env);
  await consul?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A TCP proxy to Consul that, once armed, forwards the first transaction that
 * writes the map (the commit point: PUT /v1/txn naming `<prefix>map/`), drops
 * Consul's answer to it, cuts the connection and refuses connections for
 * `blackoutMs`.
 */
async function commitCutter(
  consulPort: number,
  mapKey: string,
  blackoutMs: number,
): Promise<{ addr: string; arm: () => void; cut: () => boolean; close: () => Promise<void> }> {
  let armed = false;
  let cutAt = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    if (cutAt && Date.now() < cutAt + blackoutMs) return client.destroy();
    const upstream = connect({ host: "127.0.0.1", port: consulPort });
    for (const x of [client, upstream]) {
      sockets.add(x);
      x.on("close", () => sockets.delete(x));
      x.on("error", () => {});
    }
    let request = "";
    let swallow = false;
    client.on("data", (chunk: Buffer) => {
      // one request at a time on a keep-alive connection: a chunk that starts one starts afresh
      const text = chunk.toString("latin1");
      request = /^(GET|PUT|POST|DELETE) /.test(text) ? text : request + text;
      if (armed && !cutAt && request.includes("PUT /v1/txn") && request.includes(mapKey)) {
        cutAt = Date.now();
        swallow = true;
        setTimeout(() => client.destroy(), 300);
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (!swallow) client.write(chunk);
    });
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    addr: `127.0.0.1:${port}`,
    arm: () => (armed = true),
    cut: () => cutAt > 0,
    close: async () => {
      for (const x of sockets) x.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

describe("a commit whose outcome is unknown", () => {
  it("leaves the source fenced and the copy prepared; recovery finishes the move and every write is served", async () => {
    const up = await cli(
      ["up", "--local", "--nodes", "2", "--zones", "a,b", "--base-port", String(await freePortRange(2))],
      env,
    );
    expect(up.code, up.err).toBe(0);
    const token = readFileSync(join(dir, "local", "token"), "utf8").trim();
    const { map } = JSON.parse((await cli(["shards", "--json"], env)).out) as {
      map: { nodes: { id: string; address: string }[]; shards: { id: string; node: string }[] };
    };
    const addressOf = (node: string) => map.nodes.find((n) => n.id === node)!.address;
    const sh = map.shards.find((s) => s.node === "node-1")!;
    // acknowledged writes, some of them to the shard that moves
    const acked = new Map<string, string>();
    for (let i = 0; i < 40; i++) {
      const r = await cli(["put", `k${i}`, `v${i}`], env);
      expect(r.code, r.err).toBe(0);
      acked.set(`k${i}`, `v${i}`);
    }
    const stateOf = async (node: string) => {
      const port = Number(addressOf(node).split(":")[1]);
      const r = await http(port, "GET", `/v1/shards/${sh.id}`, { token });
      return r.status === 200 ? (r.json() as { state: string }).state : `http ${r.status}`;
    };

    // the coordinator, talking to Consul through the proxy, stops itself once the target has
    // prepared, just before the commit
    const cutter = await commitCutter(consul.httpPort, "commit-unknown/map/", 4000);
    const { command, args } = shardctlCommand();
    const mover = spawn(command, [...args, "migrate", "--shard", sh.id, "--to", "node-2", "--apply"], {
      cwd: repoRoot,
      env: {
        ...process.env,
        ...env,
        CONSUL_HTTP_ADDR: cutter.addr,
        SHARDCTL_FAILPOINT: "migrate.prepared",
        SHARDCTL_CONSUL_TIMEOUT: "1.5",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let log = "";
    mover.stdout!.on("data", (d) => (log += d));
    mover.stderr!.on("data", (d) => (log += d));
    const exited = new Promise<number | null>((r) => mover.once("exit", (code) => r(code)));
    try {
      await until("the coordinator at the commit point", () => processState(mover.pid!) === "T", 60_000);
      expect(await stateOf("node-1")).toBe("fenced");
      expect(await stateOf("node-2")).toBe("prepared");
      // When the commit reaches Consul but its answer is lost, and Consul cannot be reached after
      cutter.arm();
      mover.kill("SIGCONT");
      const code = await exited;
      expect(cutter.cut(), log).toBe(true);
      // Then the coordinator says the outcome is unknown, and leaves both sides as they were
      expect(code, log).toBe(1);
      expect(log).toMatch(/the commit was sent but its outcome is unknown/);
      expect(log).not.toMatch(/ABORT/);
      expect(await stateOf("node-1")).toBe("fenced");
      expect(await stateOf("node-2")).toBe("prepared");
    } finally {
      if (mover.exitCode === null) mover.kill("SIGKILL");
      await cutter.close();
    }

    // When recovery runs (straight to Consul), it finishes the move: the map names node-2
    const rec = await cli(["migrations", "--recover"], env);
    expect(rec.code, rec.err).toBe(0);
    const after = JSON.parse((await cli(["shards", "--json"], env)).out) as typeof map extends infer M
      ? { map: M }
      : never;
    const owner = after.map.shards.find((s) => s.id === sh.id)!.node;
    expect(owner).toBe("node-2");
    expect(await stateOf(owner)).toBe("owned");
    // and every acknowledged write is served
    for (const [k, v] of acked) {
      const g = await cli(["get", k], env);
      expect(g.code, `${k}: ${g.err}`).toBe(0);
      expect(g.out, k).toBe(v);
    }
  });
});
