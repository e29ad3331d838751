/**
 * A shard of a few large entries moves with a short write pause: pre-copy counts what it leaves
 * to the catch-up (after the fence, while writers wait) in bytes too, not only in entries. Before,
 * it stopped as soon as fewer than 32 entries were left, however large: 15 values of 16 MiB made a
 * write pause of 5 s. Three real agents (`up --local`).
 */
import { describe, expect, it } from "vitest";
import { ShardClient } from "../../../src/client/shard-client.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { keysIn, localClusterSuite, readMapFile } from "./local-fixture.js";

const cluster = localClusterSuite("migrate-large-entries");
const { cli, seg } = cluster;

describe("a move of a shard of large entries", () => {
  it("copies them before the fence: the catch-up after it has nothing left to copy", async () => {
    const { map } = readMapFile(cluster.dir);
    const shard = map.shards[0];
    const target = map.nodes.find((n) => n.id !== shard.node)!.id;
    const keys = keysIn(seg, shard.ranges, "large-", 12);
    const c = new ShardClient({
      store: new EmbeddedStore(cluster.dir),
      token: cluster.token,
      deadlineMs: 20_000,
    });
    try {
      for (const [i, k] of keys.entries()) await c.put(k, Buffer.alloc(2 * 1024 * 1024, i));
    } finally {
      c.close();
    }
    const r = await cli("migrate", "--shard", shard.id, "--to", target, "--apply");
    expect(r.code, r.err).toBe(0);
    // before: "pre-copied 0 entries", then "caught up 12 entries" (24 MiB) inside the write pause
    expect(r.err).toMatch(/pre-copied 12 entries \(\d+ bytes\)/);
    expect(r.err).toMatch(/caught up 0 entries/);
    const get = await cli("get", keys[11], "--json");
    expect(get.code, get.err).toBe(0);
    const got = JSON.parse(get.out) as { value: string; encoding?: string };
    const bytes = Buffer.from(got.value, got.encoding === "base64" ? "base64" : "utf8");
    expect(bytes.length).toBe(2 * 1024 * 1024);
    expect(bytes.equals(Buffer.alloc(2 * 1024 * 1024, 11))).toBe(true);
  });
});
