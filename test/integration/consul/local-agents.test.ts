/**
 * A local cluster with Consul as the store: the agents appear in Consul's
 * catalog with passing health checks, the autopilot collects the access
 * windows from the agents (not from a file) and carries the split out as a
 * migration between the agents' shards (the hot segment's data moves to its
 * new shard, the map commit carries the leader's term), the data is still
 * served, and `down` removes the services again.
 */
import { rmSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli } from "../../helpers/cli.js";
import { startConsulDev, type DevConsul } from "../../helpers/consul.js";
import { freePortRange, tempDir } from "../agent/harness.js";

let consul: DevConsul;
let dir: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  consul = await startConsulDev();
  dir = tempDir("local-consul");
  env = {
    SHARDCTL_STORE: "consul",
    CONSUL_HTTP_ADDR: consul.addr,
    SHARDCTL_CONSUL_PREFIX: "local-agents/",
    SHARDCTL_DATA_DIR: dir,
    SHARDCTL_SEGMENTS: "64",
    SHARDCTL_ZONES: "a,b",
    SHARDCTL_CONFIG: "/nonexistent-is-not-used",
  };
  delete env.SHARDCTL_CONFIG;
});

afterAll(async () => {
  await cli(["down", "--timeout", "5"], env);
  await consul?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("a local cluster on Consul", () => {
  it("registers the agents as healthy services, feeds the autopilot from them, and deregisters on down", async () => {
    const up = await cli(
      ["up", "--local", "--nodes", "2", "--zones", "a,b", "--base-port", String(await freePortRange(2))],
      env,
    );
    expect(up.code, up.err).toBe(0);

    // health checks run every 2 s: wait for both to pass
    let nodes: { id: string; health: string; zone: string }[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await cli(["nodes", "--json"], env);
      expect(r.code, r.err).toBe(0);
      const parsed = JSON.parse(r.out);
      nodes = Array.isArray(parsed) ? parsed : parsed.nodes;
      if (nodes.length === 2 && nodes.every((n) => n.health === "passing")) break;
      await sleep(500);
    }
    expect(nodes.map((n) => [n.id, n.health])).toEqual([
      ["node-1", "passing"],
      ["node-2", "passing"],
    ]);

    // traffic on one key, counted by the agent that owns it
    for (let i = 0; i < 40; i++)
      expect((await cli(["put", "hot", `v${i}`, "--zone", "b"], env)).code).toBe(0);
    const before = JSON.parse((await cli(["shards", "--json"], env)).out);
    // a tiny split threshold so that 40 writes in the window make the key hot
    const config = `${dir}/shardctl.yaml`;
    const { writeFileSync } = await import("node:fs");
    writeFileSync(
      config,
      "reshard:\n  splitRate: 0.01\n  mergeRate: 0\n  shardLoadCap: 1000\n  minDwellSeconds: 0\n",
    );
    const pilot = await cli(["autopilot", "--once"], { ...env, SHARDCTL_CONFIG: config });
    expect(pilot.code, pilot.err).toBe(0);
    expect(pilot.err).toMatch(/applied 1 layout change\(s\)/);
    expect(pilot.err).toMatch(/migration \S+-split-\S+: done/);
    const after = JSON.parse((await cli(["shards", "--json"], env)).out);
    expect(after.version).toBeGreaterThan(before.version);
    expect(after.map.shards.length).toBe(before.map.shards.length + 1);
    // the split is in the journal, done, stamped with the leader's term in the map
    const hist = JSON.parse((await cli(["migrations", "--json"], env)).out) as {
      phase: string;
      layout?: unknown;
    }[];
    expect(hist.filter((h) => h.layout && h.phase === "done").length).toBeGreaterThanOrEqual(1);
    // the CLI plans against the new layout: nothing left to split
    const reshard = await cli(["reshard", "--apply", "--json"], { ...env, SHARDCTL_CONFIG: config });
    expect(reshard.code, reshard.err).toBe(0);
    expect(JSON.parse(reshard.out).diff.ops).toEqual([]);
    // and the data is still served
    const got = await cli(["get", "hot"], env);
    expect(got.code).toBe(0);
    expect(got.out).toBe("v39");

    expect((await cli(["down", "--timeout", "5"], env)).code).toBe(0);
    const gone = JSON.parse((await cli(["nodes", "--json"], env)).out);
    const left = (Array.isArray(gone) ? gone : gone.nodes) as { health: string }[];
    expect(left.every((n) => n.health === "unregistered")).toBe(true);
  });
});
