/**
 * Released copies (not-owned: a redirect, no data) on an in-process agent restarted with a location
 * map to read: those of shards the map no longer has (a merge's absorbed shards, whose ids never
 * come back) are removed; those of shards that live on elsewhere keep redirecting.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { initialLayout, type LocationMap } from "../../../src/engine/location-map.js";
import { admin, get, InProcessAgent, put, tempDir } from "./harness.js";

const running = new InProcessAgent();

afterEach(() => running.stop());

/** A map of shards shard-1 (here) and, when `withTwo`, shard-2 (moved to node-b). */
function mapWith(withTwo: boolean): LocationMap {
  const nodes = [
    { id: "node-a", address: "127.0.0.1:1", zone: "a" },
    { id: "node-b", address: "127.0.0.1:2", zone: "b" },
  ];
  const m = initialLayout(64, nodes, { shardsPerNode: 1, now: 0 });
  return withTwo ? m : { ...m, shards: m.shards.filter((s) => s.id !== "shard-2") };
}

describe("released copies at start", () => {
  it("are removed when the map no longer has their shard (merged away), kept when it lives elsewhere", async () => {
    const dataDir = join(tempDir("released-copies"), "data");
    const shards = join(dataDir, "shards");
    await running.start(dataDir);
    let port = running.port;
    for (const id of ["shard-1", "shard-2"])
      expect((await admin(port, "PUT", id, { epoch: 1 })).status).toBe(201);
    expect((await put(port, "shard-2", "k", "v")).status).toBe(200);
    // shard-2 released to node-b (a move's commit, or a merge's)
    const released = await admin(port, "POST", "shard-2/release", {
      epoch: 2,
      redirect: { node: "node-b", address: "127.0.0.1:2", epoch: 2 },
    });
    expect(released.status, released.body.toString()).toBe(200);

    // the map still has shard-2 (moved): its copy keeps redirecting
    await running.start(dataDir, async () => mapWith(true));
    port = running.port;
    expect((await get(port, "shard-2", "k")).status).toBe(421);

    // the map no longer has it (merged away): removed. Before: a directory (and, until this
    // session's other change, an open log file) per merge, for ever
    await running.start(dataDir, async () => mapWith(false));
    port = running.port;
    expect(running.logs.join("\n")).toMatch(
      /shard shard-2: released here and no longer in the location map: removed/,
    );
    expect(existsSync(join(shards, "shard-2"))).toBe(false);
    expect(readdirSync(shards)).toEqual(["shard-1"]);
    // a client still routing there is told the shard is unknown (it reloads its map)
    const r = await get(port, "shard-2", "k");
    expect(r.status).toBe(404);
    expect(r.json().error).toBe("unknown-shard");

    // a map that cannot be read changes nothing
    await running.start(dataDir, async () => {
      throw new Error("store down");
    });
    expect(readdirSync(shards)).toEqual(["shard-1"]);
  });
});
