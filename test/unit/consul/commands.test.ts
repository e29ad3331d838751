/** status / nodes / autopilot on the embedded store, and hostile flags (Consul-backed runs are in test/integration/consul). */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runCli } from "../../../src/cli.js";
import { TermStampedStore } from "../../../src/consul/autopilot.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { agentlessMap, smallMap } from "../../contract/maps.js";

let dir: string;
let env: NodeJS.ProcessEnv;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-cmd-"));
  writeFileSync(join(dir, "c.yaml"), "{}\n");
  env = {
    HOME: dir,
    SHARDCTL_CONFIG: join(dir, "c.yaml"),
    SHARDCTL_DATA_DIR: dir,
    SHARDCTL_SEGMENTS: "1024",
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function cli(args: string[]) {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = "";
  let e = "";
  out.on("data", (b) => (o += b));
  err.on("data", (b) => (e += b));
  const code = await runCli(args, { out, err }, env);
  return { code, out: o, err: e };
}

describe("status and nodes on the embedded store", () => {
  it("an empty store: status says there is no map yet", async () => {
    const r = await cli(["status"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("map:        none yet");
  });

  it("after a write: version, term, shards per node; nodes lists the map's nodes with health n/a", async () => {
    const w = await new EmbeddedStore(dir).compareAndSet(0, { ...smallMap(), term: 4 });
    expect(w.ok).toBe(true);
    const s = await cli(["status", "--json"]);
    expect(JSON.parse(s.out)).toMatchObject({
      store: "embedded",
      leader: null,
      term: 4,
      map: { version: 1, shards: 6, segments: 1024, mapTerm: 4 },
      nodes: [
        { id: "n1", shards: 2 },
        { id: "n2", shards: 2 },
        { id: "n3", shards: 2 },
      ],
      migrations: [],
    });
    const n = await cli(["nodes", "--json"]);
    expect(JSON.parse(n.out)).toEqual([
      {
        id: "n1",
        address: "127.0.0.1:7001",
        zone: "a",
        health: "n/a",
        inMap: true,
        shards: 2,
        registered: false,
      },
      {
        id: "n2",
        address: "127.0.0.1:7002",
        zone: "b",
        health: "n/a",
        inMap: true,
        shards: 2,
        registered: false,
      },
      {
        id: "n3",
        address: "127.0.0.1:7003",
        zone: "c",
        health: "n/a",
        inMap: true,
        shards: 2,
        registered: false,
      },
    ]);
  });

  it("autopilot --once on the embedded store runs one cycle (no election) and exits 0", async () => {
    await new EmbeddedStore(dir).compareAndSet(0, agentlessMap());
    const r = await cli(["autopilot", "--once"]);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/no leader election/);
    expect(r.err).toMatch(/term 0: (applied|no layout change)/);
  });
});

describe("hostile flags", () => {
  it.each([["abc"], ["0"], ["-1"], ["1e9"], [""]])("autopilot --interval %j is a usage error", async (v) => {
    const r = await cli(["autopilot", "--once", "--interval", v]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--interval must be a number of seconds/);
  });

  it.each([["a b"], ["x;rm -rf"], ["é"], ["a".repeat(200)]])(
    "autopilot --id %j is a usage error",
    async (v) => {
      const r = await cli(["autopilot", "--once", "--id", v]);
      expect(r.code).toBe(2);
    },
  );

  it("a malformed CONSUL_HTTP_ADDR is a clear error before any request", async () => {
    env = { ...env, SHARDCTL_STORE: "consul", CONSUL_HTTP_ADDR: "ftp://nope" };
    const r = await cli(["status"]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/CONSUL_HTTP_ADDR "ftp:\/\/nope" is not an address/);
  });

  it("an unusable prefix is a usage error", async () => {
    env = { ...env, SHARDCTL_STORE: "consul", SHARDCTL_CONSUL_PREFIX: "../etc" };
    const r = await cli(["status"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/prefix "..\/etc" is not usable/);
  });
});

describe("TermStampedStore", () => {
  it("stamps the leader's term on every map it writes", async () => {
    const inner = new EmbeddedStore(dir);
    const stamped = new TermStampedStore(inner, 7);
    const r = await stamped.compareAndSet(0, smallMap());
    expect(r.ok).toBe(true);
    expect((await inner.load())!.map.term).toBe(7);
  });
});
