/**
 * A forced snapshot (POST /v1/admin/shards/:id/snapshot) on an in-process agent: while a migration
 * copying the shard holds its log and snapshot, the answer says that none was taken (it was 200
 * with the old snapshotLsn, as if one had been).
 */
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { admin, InProcessAgent, put, tempDir } from "./harness.js";

const running = new InProcessAgent();

afterEach(() => running.stop());

describe("a forced snapshot", () => {
  it("is refused with 409 compaction-held while a migration's copy holds the log, and taken once the hold ends", async () => {
    const agent = await running.start(join(tempDir("admin-snapshot"), "data"));
    const port = running.port;
    expect((await admin(port, "PUT", "shard-1", { epoch: 1 })).status).toBe(201);
    for (let i = 0; i < 20; i++) expect((await put(port, "shard-1", `k${i}`, `v${i}`)).status).toBe(200);
    const shard = agent.shards.get("shard-1")!;
    // what a move's, split's or merge's reads of the shard do
    shard.holdCompaction(30_000);
    const held = await admin(port, "POST", "shard-1/snapshot", { epoch: 1 });
    expect(held.status).toBe(409);
    expect(held.json()).toMatchObject({ error: "compaction-held", retryAfterS: 30 });
    expect(held.json().message).toMatch(
      /no snapshot was taken: a migration copying the shard .* up to 30 s more/,
    );
    expect(held.headers["retry-after"]).toBe("30");
    expect(shard.snapshotLsn).toBe(0);
    // the hold lapses (its coordinator is done, or died)
    (shard as unknown as { compactionHeldUntil: number }).compactionHeldUntil = 0;
    const taken = await admin(port, "POST", "shard-1/snapshot", { epoch: 1 });
    expect(taken.status, taken.body.toString()).toBe(200);
    expect(taken.json().snapshotLsn).toBe(20);
  });
});
