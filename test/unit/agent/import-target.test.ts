/**
 * checkImportTarget: the import endpoints take segments into a shard only as
 * the plain migrate path would let it take ownership — owned here (a merge's
 * kept shard) or a new piece receiving for this migration, at an epoch no
 * older than the highest this agent has seen.
 */
import { describe, expect, it } from "vitest";
import { checkImportTarget } from "../../../src/agent/import.js";
import { ApiError } from "../../../src/agent/http-util.js";
import type { ShardMeta } from "../../../src/agent/shard-meta.js";

type Meta = Pick<ShardMeta, "shardId" | "epoch" | "state" | "redirect" | "migration">;

function refusal(meta: Meta, migration: string, epoch?: number): ApiError | undefined {
  try {
    checkImportTarget(meta, migration, epoch);
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
}

const released: Meta = {
  shardId: "shard-5",
  epoch: 2,
  state: "not-owned",
  redirect: { node: "node-3", address: "127.0.0.1:1", epoch: 2 },
};

describe("checkImportTarget", () => {
  it("refuses a released copy with the epoch it was released at: 409 stale-epoch, naming the new owner", () => {
    const e = refusal(released, "m1", 1)!;
    expect(e.status).toBe(409);
    expect(e.code).toBe("stale-epoch");
    expect(e.message).toMatch(/not-owned here at epoch 2 \(released to node-3 at epoch 2\)/);
    expect(e.message).toMatch(/nothing was changed/);
    expect(e.extra).toMatchObject({ state: "not-owned", epoch: 2, redirect: { node: "node-3" } });
  });

  it("refuses a released copy at its own or a newer epoch too (409 not-owner), and without an epoch (an import page)", () => {
    for (const epoch of [2, 3, undefined]) {
      const e = refusal(released, "m1", epoch)!;
      expect(e.status, String(epoch)).toBe(409);
      expect(e.code, String(epoch)).toBe("not-owner");
    }
  });

  it("refuses a fenced shard and a plain migration's prepared copy (not-owner)", () => {
    for (const state of ["fenced", "prepared"] as const) {
      const e = refusal({ shardId: "shard-1", epoch: 4, state }, "m1", 4)!;
      expect(e.code, state).toBe("not-owner");
    }
  });

  it("refuses an owned shard at a newer epoch than the coordinator presents (stale-epoch)", () => {
    expect(refusal({ shardId: "shard-1", epoch: 4, state: "owned" }, "m1", 3)?.code).toBe("stale-epoch");
  });

  it("refuses a piece receiving for another migration (another-migration)", () => {
    const e = refusal({ shardId: "shard-9", epoch: 1, state: "receiving", migration: "m0" }, "m1", 1)!;
    expect(e.code).toBe("another-migration");
  });

  it("accepts an owned shard at its epoch or a newer one, and a piece receiving for this migration", () => {
    expect(refusal({ shardId: "shard-1", epoch: 4, state: "owned" }, "m1", 4)).toBeUndefined();
    expect(refusal({ shardId: "shard-1", epoch: 4, state: "owned" }, "m1", 5)).toBeUndefined();
    expect(refusal({ shardId: "shard-1", epoch: 4, state: "owned" }, "m1")).toBeUndefined();
    expect(
      refusal({ shardId: "shard-9", epoch: 1, state: "receiving", migration: "m1" }, "m1", 1),
    ).toBeUndefined();
    expect(refusal({ shardId: "shard-9", epoch: 1, state: "receiving" }, "m1", 1)).toBeUndefined();
  });
});
