/**
 * The orphan-chunk sweep against a writer between its two steps (chunks
 * written, meta not yet committed) whose chunk names look old: its clock runs
 * behind the sweeper's, or it was paused (SIGSTOP, a long GC) for more than
 * ORPHAN_CHUNK_AGE_MS. Its commit may still succeed, so the sweep must not
 * delete the chunks it is about to reference.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConsulHttp, type TxnOp } from "../../../src/consul/http.js";
import { ConsulStore } from "../../../src/consul/store.js";
import { largeMap, smallMap } from "../../contract/maps.js";
import { rawKeys, rawPut, startConsulDev, uniquePrefix, type DevConsul } from "../../helpers/consul.js";

let consul: DevConsul;
beforeAll(async () => {
  consul = await startConsulDev();
});
afterAll(async () => {
  await consul?.stop();
});

describe("orphan sweep and a pending large write", () => {
  it("a sweep between a writer's chunk writes and its commit leaves the pending chunks alone", async () => {
    const prefix = uniquePrefix("sweep-race");
    const sweeper = new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix }), prefix });
    const init = await sweeper.compareAndSet(0, smallMap());
    if (!init.ok) throw new Error("setup write failed");
    // The writer's clock is 20 minutes behind (or it stood still that long).
    const writerHttp = new ConsulHttp({ addr: consul.addr, prefix });
    const writer = new ConsulStore({ http: writerHttp, prefix, now: () => Date.now() - 20 * 60_000 });
    const txn = writerHttp.txn.bind(writerHttp);
    let swept = -1;
    writerHttp.txn = async (ops: TxnOp[], o?: { consistent?: boolean }) => {
      if (swept < 0 && ops.some((op) => op.verb === "cas" && op.key === `${prefix}map/meta`))
        swept = await sweeper.sweepOrphanChunks();
      return txn(ops, o);
    };
    const big = largeMap();
    const r = await writer.compareAndSet(init.version, big);
    expect(r.ok).toBe(true);
    expect(swept).toBe(0);
    expect((await sweeper.load({ consistent: true }))!.map).toEqual(big);
    await writer.close();
    await sweeper.close();
  }, 120_000);

  it("chunks of a write that can no longer commit are swept once old", async () => {
    const prefix = uniquePrefix("sweep-dead");
    const store = new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix }), prefix });
    const w = await store.compareAndSet(0, smallMap());
    if (!w.ok) throw new Error("setup write failed");
    const dead = `${prefix}map/chunks/${(Date.now() - 11 * 60_000).toString(36)}-dead00-0`;
    await rawPut(consul.addr, dead, "{}");
    // The map moved on after the dead writer's chunks: its commit (against the older version) is impossible.
    const w2 = await store.compareAndSet(w.version, smallMap(1));
    if (!w2.ok) throw new Error("second write failed");
    expect(await store.sweepOrphanChunks()).toBe(1);
    expect(await rawKeys(consul.addr, prefix)).not.toContain(dead);
    expect((await store.load({ consistent: true }))!.map).toEqual(smallMap(1));
    await store.close();
  }, 60_000);
});
