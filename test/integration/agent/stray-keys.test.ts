/**
 * Keys a shard holds outside its ranges (a split's purge that did not finish,
 * or a split's source a restart found fenced and gave the map's smaller ranges)
 * are stale copies: a later merge of the piece back into the shard brought
 * them back to life wherever the piece had deleted a key and compacted its log
 * (its snapshot carries no deletes). An in-process agent (the real HTTP API on
 * loopback): a restart deletes them, and so does an import of their ranges
 * before it takes anything in.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startAgent, type Agent, type AgentOptions } from "../../../src/agent/agent.js";
import { initialLayout, type LocationMap } from "../../../src/engine/location-map.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { encodeEntry } from "../../../src/agent/log-format.js";
import { writeSnapshot } from "../../../src/agent/snapshot.js";
import { admin, get, http, inProcessAgentOptions, put, tempDir } from "./harness.js";

const SEGMENTS = 64;
const seg = new Segmenter(SEGMENTS);
let root: string;
let agent: Agent;
let port: number;
let logs: string[];

function options(): AgentOptions {
  return inProcessAgentOptions(join(root, "data"), (m) => logs.push(m));
}

/** The location map the agent reads at start: `segments` segments (only its count matters here). */
const mapOf = (segments: number) => async () =>
  initialLayout(segments, [{ id: "node-a", address: "127.0.0.1:1", zone: "a" }], { now: 0 });

/** Starts the agent reading the map `loadMap` gives (null: the agent has no map to read). */
async function start(loadMap: (() => Promise<LocationMap | null>) | null = mapOf(SEGMENTS)): Promise<void> {
  const s = await startAgent(options(), false, loadMap ?? undefined);
  agent = s.agent;
  port = s.address.port;
}

/** A shard over every segment holding 200 keys, half of them in segments 32..63; then it "splits": ranges [0, 32) without a purge. */
async function shardWithStrays(): Promise<string[]> {
  expect((await admin(port, "PUT", "shard-1", { epoch: 1, ranges: [[0, SEGMENTS]] })).status).toBe(201);
  const upper: string[] = [];
  for (let i = 0; upper.length < 100 || i < 200; i++) {
    const key = `k-${i}`;
    expect((await put(port, "shard-1", key, `v-${i}`)).status).toBe(200);
    if (seg.segmentOf(key) >= 32) upper.push(key);
  }
  // what in-doubt resolution did with a split's source: the map's smaller ranges, no purge
  agent.shards.get("shard-1")!.setMeta({ ranges: [[0, 32]], epoch: 2 });
  return upper;
}

beforeEach(async () => {
  root = tempDir("stray-keys");
  logs = [];
  await start();
});
afterEach(async () => {
  await agent.stop();
  rmSync(root, { recursive: true, force: true });
});

describe("keys a shard holds outside its ranges", () => {
  it("are deleted when the agent starts, and it says how many", async () => {
    const upper = await shardWithStrays();
    const before = agent.shards.get("shard-1")!.state.size;
    await agent.stop();
    logs = [];
    await start();
    const shard = agent.shards.get("shard-1")!;
    for (const k of upper) expect(shard.state.has(k), k).toBe(false);
    expect(shard.state.size).toBe(before - upper.length);
    expect(logs.join("\n")).toContain(
      `recovery: shard shard-1: deleted ${upper.length} stale keys outside its ranges (left by a split)`,
    );
    // deleted durably: a second restart finds nothing to delete
    await agent.stop();
    logs = [];
    await start();
    expect(agent.shards.get("shard-1")!.state.size).toBe(before - upper.length);
    expect(logs.join("\n")).not.toMatch(/stale keys/);
  });

  it("are left alone when the map cannot confirm the agent's segment count (another count, no map, an unreadable one)", async () => {
    // an agent started with a wrong SHARDCTL_SEGMENTS takes its own keys for strays: up --local
    // once restarted one so, and its keys were deleted for good
    const upper = await shardWithStrays();
    const before = agent.shards.get("shard-1")!.state.size;
    for (const loadMap of [
      mapOf(4096),
      null,
      async () => {
        throw new Error("Consul is away");
      },
    ]) {
      await agent.stop();
      logs = [];
      await start(loadMap);
      expect(agent.shards.get("shard-1")!.state.size, logs.join("\n")).toBe(before);
      expect(logs.join("\n")).not.toMatch(/stale keys outside/);
    }
    expect(logs.join("\n")).toMatch(
      /stale keys not looked for: the location map cannot be read \(Consul is away\)/,
    );
    await agent.stop();
    logs = [];
    await start(mapOf(4096));
    expect(logs.join("\n")).toMatch(
      /WARNING: the location map has 4096 segments but this agent was started with 64: .* --segments 4096/,
    );
    expect(agent.shards.get("shard-1")!.state.has(upper[0])).toBe(true);
  });

  it("in the ranges of an import (a merge bringing them back) are deleted before it takes anything in", async () => {
    const upper = await shardWithStrays();
    const r = await admin(port, "POST", "shard-1/import-begin", {
      epoch: 2,
      source: "shard-9",
      migration: "m-merge",
      ranges: [[32, SEGMENTS]],
    });
    expect(r.status, r.body.toString()).toBe(201);
    const shard = agent.shards.get("shard-1")!;
    for (const k of upper) expect(shard.state.has(k), k).toBe(false);
    // its own keys stay
    expect(shard.state.size).toBeGreaterThan(0);
    for (const k of shard.state.keys()) expect(seg.segmentOf(k)).toBeLessThan(32);
  });

  it("a key that starts with U+FEFF is its own key through a restart, not a stray nor another key", async () => {
    // Given a shard over segments [0, 32) holding: a key that starts with U+FEFF whose segment is
    // inside while the key without the mark is outside; and a key with its marked twin, both inside
    expect((await admin(port, "PUT", "shard-1", { epoch: 1, ranges: [[0, 32]] })).status).toBe(201);
    const inside = (k: string) => seg.segmentOf(k) < 32;
    const find = (ok: (i: number) => boolean) => {
      let i = 0;
      while (!ok(i)) i++;
      return i;
    };
    const bom = `\uFEFFk${find((i) => inside(`\uFEFFk${i}`) && !inside(`k${i}`))}`;
    const plain = `p${find((i) => inside(`p${i}`) && inside(`\uFEFFp${i}`))}`;
    const twin = `\uFEFF${plain}`;
    expect((await put(port, "shard-1", bom, "with the mark")).status).toBe(200);
    expect((await put(port, "shard-1", plain, "plain")).status).toBe(200);
    expect((await put(port, "shard-1", twin, "marked twin")).status).toBe(200);
    // When the agent restarts (its shards rebuilt from their logs, stale keys looked for)
    await agent.stop();
    logs = [];
    await start();
    // Then every key reads back as written: none deleted as a stray, none written over another
    expect(logs.join("\n")).not.toMatch(/stale keys/);
    expect((await get(port, "shard-1", bom)).body.toString()).toBe("with the mark");
    expect((await get(port, "shard-1", plain)).body.toString()).toBe("plain");
    expect((await get(port, "shard-1", twin)).body.toString()).toBe("marked twin");
  });

  it("a shard whose stale-key check fails does not stop the agent's start: it says so and serves", async () => {
    // Given a shard holding a key no client could have written (the empty key, which the check
    // cannot place in a segment), written below the API
    expect((await admin(port, "PUT", "shard-1", { epoch: 1, ranges: [[0, 32]] })).status).toBe(201);
    expect((await put(port, "shard-1", "k-0", "v")).status).toBe(200);
    await agent.shards.get("shard-1")!.write([{ op: "put", key: "", value: Buffer.from("x") }]);
    await agent.stop();
    logs = [];
    // When it starts again: it starts whole (before, start-up stopped after listening, without its
    // window checkpoints and signal handlers), and the log names the shard whose check failed
    await start();
    expect(logs.join("\n")).toMatch(
      /recovery: WARNING: shard shard-1: stale keys outside its ranges not deleted: the key is empty/,
    );
    expect(logs.join("\n")).toMatch(/listening on/);
    expect((await get(port, "shard-1", "k-0")).body.toString()).toBe("v");
  });
});

describe("a released copy's data", () => {
  const files = (id: string) =>
    readdirSync(join(root, "data", "shards", id)).filter(
      (n) => !(n.startsWith("log-") && statSync(join(root, "data", "shards", id, n)).size === 0),
    );

  it("is deleted when the release comes (the redirect stays), and at start when an agent kept it", async () => {
    // Given two shards with data; one released through the API, the other as an agent from before
    // the discard left it (released, its files kept)
    for (const id of ["shard-1", "shard-2"]) {
      expect((await admin(port, "PUT", id, { epoch: 1 })).status).toBe(201);
      for (let i = 0; i < 50; i++) expect((await put(port, id, `k-${i}`, `v-${i}`)).status).toBe(200);
    }
    const redirect = { node: "node-b", address: "127.0.0.1:2", epoch: 2 };
    const released = await admin(port, "POST", "shard-1/release", { epoch: 2, redirect });
    expect(released.status).toBe(200);
    // Then the released one holds nothing but its meta.json, and redirects
    expect(files("shard-1")).toEqual(["meta.json"]);
    const r = await get(port, "shard-1", "k-1", 2);
    expect(r.status).toBe(421);
    expect(r.json().redirect).toMatchObject(redirect);
    // and the one an older agent released keeping its data loses it at the next start
    agent.shards.get("shard-2")!.release(2, redirect);
    expect(files("shard-2").length).toBeGreaterThan(1);
    await agent.stop();
    logs = [];
    await start();
    expect(logs.join("\n")).toMatch(
      /shard shard-2: recovery: released: its copy's data deleted \(\d+ files\)/,
    );
    expect(files("shard-2")).toEqual(["meta.json"]);
    expect((await get(port, "shard-2", "k-1", 2)).status).toBe(421);
  });
});

describe("keys copied in from another agent", () => {
  const entry = (lsn: number, key: string) =>
    encodeEntry({
      lsn,
      timestamp: 1,
      migrationTimestamp: 0,
      op: "put",
      shardId: "shard-2",
      key,
      value: Buffer.from("v"),
    });

  it.each([
    ["the empty key", "", /the key is empty/],
    ["a key over limits.maxKeyBytes", "k".repeat(1025), /longer than 1024 bytes/],
  ])("a replicated entry holding %s is refused (400), nothing appended", async (_, key, why) => {
    expect((await admin(port, "POST", "shard-2/receive", { epoch: 1 })).status).toBe(201);
    const r = await http(port, "POST", "/v1/admin/shards/shard-2/append", {
      body: Buffer.concat([entry(1, "fine"), entry(2, key)]),
      headers: { "x-shard-epoch": "1" },
    });
    expect(r.status, r.body.toString()).toBe(400);
    expect(r.json().message).toMatch(/entry LSN 2 has a key this agent would refuse/);
    expect(r.json().message).toMatch(why);
    expect(agent.shards.get("shard-2")!.lsn).toBe(0);
  });

  it("a snapshot holding the empty key is refused (400), nothing installed", async () => {
    expect((await admin(port, "POST", "shard-2/receive", { epoch: 1 })).status).toBe(201);
    const src = join(root, "snapshot-source");
    mkdirSync(src);
    const value = { value: Buffer.from("v"), lsn: 1, timestamp: 1 };
    const body = readFileSync(
      await writeSnapshot(src, "shard-2", 2, [
        ["fine", value],
        ["", { ...value, lsn: 2 }],
      ]),
    );
    const sum = `${body
      .readUInt32LE(body.length - 4)
      .toString(16)
      .padStart(8, "0")}-${body.length}`;
    const r = await http(port, "PUT", "/v1/admin/shards/shard-2/snapshot", {
      body,
      headers: { "x-shard-epoch": "1", "x-snapshot-lsn": "2", "x-snapshot-checksum": sum },
    });
    expect(r.status, r.body.toString()).toBe(400);
    expect(r.json().message).toMatch(/the snapshot holds a key this agent would refuse \(the key is empty\)/);
    const shard = agent.shards.get("shard-2")!;
    expect(shard.lsn).toBe(0);
    expect(shard.state.size).toBe(0);
  });
});
