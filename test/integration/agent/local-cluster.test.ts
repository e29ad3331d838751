/** `shardctl up --local` / put / get / delete / `down`, through runCli, with real agent processes. */
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_NODE_FLAGS } from "../../../src/agent/node-flags.js";
import { runCli } from "../../../src/cli.js";
import { processAlive } from "../../../src/store/embedded.js";
import { freePortRange, tempDir } from "./harness.js";

function fakeIO() {
  const out: Buffer[] = [];
  const err: string[] = [];
  return {
    io: {
      out: new Writable({ write: (c, _e, cb) => (out.push(Buffer.from(c)), cb()) }),
      err: new Writable({ write: (c, _e, cb) => (err.push(String(c)), cb()) }),
    },
    out: () => Buffer.concat(out).toString(),
    err: () => err.join(""),
  };
}

let dir: string;
const env: NodeJS.ProcessEnv = { ...process.env, SHARDCTL_SEGMENTS: "256", SHARDCTL_ZONES: "a,b,c" };
delete env.SHARDCTL_TOKEN;
delete env.SHARDCTL_DATA_DIR;
delete env.SHARDCTL_STORE;

async function cli(...args: string[]) {
  const f = fakeIO();
  const code = await runCli(["--data-dir", dir, ...args], f.io, env);
  return { code, out: f.out(), err: f.err() };
}

beforeAll(() => {
  dir = tempDir("local");
});

afterAll(async () => {
  await cli("down", "--timeout", "5");
  rmSync(dir, { recursive: true, force: true });
});

describe("local cluster", () => {
  it("starts 3 agents, writes the layout, serves put/get/delete, is idempotent, and stops cleanly", async () => {
    const base = String(await freePortRange(3));
    const up = await cli("up", "--local", "--nodes", "3", "--zones", "a,b,c", "--base-port", base, "--json");
    expect(up.code, up.err).toBe(0);
    const result = JSON.parse(up.out) as {
      nodes: { id: string; address: string; pid: number }[];
      layoutWritten: boolean;
      shardsAssigned: number;
    };
    expect(result.nodes.map((n) => n.id)).toEqual(["node-1", "node-2", "node-3"]);
    expect(result.layoutWritten).toBe(true);
    expect(result.shardsAssigned).toBe(12);
    // every agent runs with the agent's V8 flags (a small young generation: shorter pauses)
    for (const n of result.nodes) {
      const argv = readFileSync(`/proc/${n.pid}/cmdline`, "utf8").split("\0");
      expect(argv.slice(1, 1 + AGENT_NODE_FLAGS.length)).toEqual(AGENT_NODE_FLAGS);
    }
    const token = join(dir, "local", "token");
    expect(statSync(token).mode & 0o777).toBe(0o600);
    const map = JSON.parse(readFileSync(join(dir, "location-map.json"), "utf8")).map;
    expect(map.nodes.map((n: { address: string }) => n.address)).toEqual(result.nodes.map((n) => n.address));

    const again = await cli("up", "--local", "--nodes", "3", "--base-port", base);
    expect(again.code).toBe(0);
    expect(again.err).toMatch(/already up/);

    expect((await cli("put", "greeting", "hello world")).code).toBe(0);
    const got = await cli("get", "greeting");
    expect(got.code).toBe(0);
    expect(got.out).toBe("hello world");
    const valueFile = join(dir, "blob.bin");
    writeFileSync(valueFile, Buffer.from([0, 255, 1, 254]));
    expect((await cli("put", "blob", "--file", valueFile)).code).toBe(0);
    const json = await cli("get", "blob", "--json");
    expect(JSON.parse(json.out)).toMatchObject({ value: "AP8B/g==", encoding: "base64" });
    const outFile = join(dir, "blob.out");
    expect((await cli("get", "blob", "--out", outFile)).code).toBe(0);
    expect(readFileSync(outFile)).toEqual(Buffer.from([0, 255, 1, 254]));

    // accesses recorded into the file while agents serve the layout: said to count only without them
    const recorded = await cli("record", "greeting", "--count", "5");
    expect(recorded.code).toBe(0);
    expect(recorded.err).toMatch(/warning: agents serve this layout: .* count only while no agent answers/);

    const missing = await cli("get", "nope");
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/key not found: nope/);
    expect((await cli("delete", "greeting")).code).toBe(0);
    expect((await cli("get", "greeting")).code).toBe(1);
    const bad = await cli("put", "", "x");
    expect(bad.code).toBe(2);
    const both = await cli("put", "k", "v", "--file", valueFile);
    expect(both.code).toBe(2);

    const down = await cli("down", "--json");
    expect(down.code).toBe(0);
    expect(JSON.parse(down.out).stopped.sort()).toEqual(["node-1", "node-2", "node-3"]);
    for (const n of ["node-1", "node-2", "node-3"])
      expect(existsSync(join(dir, "local", n, "agent.pid"))).toBe(false);
    // ended (a zombie init has not reaped yet counts as ended)
    for (const n of result.nodes) expect(processAlive(n.pid)).toBe(false);
    const again2 = await cli("down");
    expect(again2.err).toMatch(/no local cluster is running/);
  });

  it("gives its agents the config file it read (--config): their limits are the command's", async () => {
    // Given a config file that raises the key limit from 1024 to 4000 bytes, given with --config
    const cfgDir = tempDir("local-config");
    const cfg = join(cfgDir, "limits.yaml");
    writeFileSync(cfg, "limits:\n  maxKeyBytes: 4000\n");
    const c = async (...args: string[]) => {
      const f = fakeIO();
      const code = await runCli(["--config", cfg, "--data-dir", cfgDir, ...args], f.io, env);
      return { code, out: f.out(), err: f.err() };
    };
    try {
      const base = String(await freePortRange(1));
      const up = await c("up", "--local", "--nodes", "1", "--zones", "a", "--base-port", base, "--json");
      expect(up.code, up.err).toBe(0);
      // When a 2000-byte key is written and read through the agent
      const key = "k".repeat(2000);
      const put = await c("put", key, "long");
      // Then the agent took it (before, it ran with the default limit and answered 413)
      expect(put.code, put.err).toBe(0);
      expect((await c("get", key)).out).toBe("long");
      const pid = (JSON.parse(up.out) as { nodes: { pid: number }[] }).nodes[0].pid;
      const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
      expect(environ).toContain(`SHARDCTL_CONFIG=${cfg}`);
      expect(environ).toContain("SHARDCTL_STORE=embedded");
    } finally {
      await c("down", "--timeout", "5");
      rmSync(cfgDir, { recursive: true, force: true });
    }
  });
});
