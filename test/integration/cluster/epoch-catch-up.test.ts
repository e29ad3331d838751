/**
 * A read that carried an epoch above the map's (any token holder can send one: agents keep the
 * highest epoch they have seen and refuse lower ones) left every client, reading the map,
 * refused with 409 stale-epoch, and `migrations --recover` said "nothing orphaned". It now finds
 * the shard served above the map's epoch with no migration open, and raises the map's epoch to
 * the owner's. Three real agents (`up --local`), the embedded store.
 */
import { describe, expect, it } from "vitest";
import { http } from "../agent/harness.js";
import { localClusterSuite, readMapFile } from "./local-fixture.js";

const cluster = localClusterSuite("epoch-catch-up");
const { cli, seg } = cluster;

describe("migrations --recover and an epoch the map never gave", () => {
  it("raises the map's epoch to the one its owner serves the shard at, and clients read again", async () => {
    expect((await cli("put", "user:42", "hello")).code).toBe(0);
    const { map } = readMapFile(cluster.dir);
    const s = seg.segmentOf("user:42");
    const shard = map.shards.find((x) => x.ranges.some(([a, b]) => s >= a && s < b))!;
    const port = Number(map.nodes.find((n) => n.id === shard.node)!.address.split(":")[1]);
    const path = `/v1/shards/${shard.id}/keys/user%3A42`;
    const huge = 2 ** 53 - 1; // 16 digits: HTTP took 15 at most, the binary protocol and admin API 2^53 − 1
    const forged = await http(port, "GET", path, {
      token: cluster.token,
      headers: { "x-shard-epoch": String(huge) },
    });
    expect(forged.status).toBe(200);
    const stale = await http(port, "GET", path, {
      token: cluster.token,
      headers: { "x-shard-epoch": String(shard.epoch) },
    });
    expect(stale.status).toBe(409);
    const rec = await cli("migrations", "--recover");
    expect(rec.code, rec.err).toBe(0);
    expect(rec.err).toContain(
      `recovery: ${shard.id} is served by ${shard.node} at epoch ${huge}, above the map's ${shard.epoch}, with no migration open`,
    );
    expect(readMapFile(cluster.dir).map.shards.find((x) => x.id === shard.id)!.epoch).toBe(huge);
    const get = await cli("get", "user:42");
    expect(get.code, get.err).toBe(0);
    expect(get.out).toBe("hello");
    // nothing more to do the second time
    const again = await cli("migrations", "--recover");
    expect(again.err).toContain("recovery: nothing orphaned");
  });
});
