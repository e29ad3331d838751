/**
 * The autopilot's memory of failed moves in the store (src/cluster/autopilot-memory.ts), on the
 * real embedded store in a temporary directory: what one process saves, the next one takes up;
 * what cannot be read or written is logged and never stops a cycle.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MoveBackoffs } from "../../../src/cluster/autopilot-migrate.js";
import { AutopilotMemory, memoryText, readMemory } from "../../../src/cluster/autopilot-memory.js";
import { BACKOFF_MEMORY_FORMAT } from "../../../src/engine/move-backoff.js";
import type { LocationStore } from "../../../src/engine/ports.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";

const policy = { initialMs: 60_000, maxMs: 3_600_000 };
const T0 = Date.UTC(2026, 0, 1, 12);
let dir: string;
let logs: string[];
const log = (m: string) => logs.push(m);
const fresh = () => new AutopilotMemory(new MoveBackoffs(policy), new MoveBackoffs(policy));
const file = () => join(dir, "autopilot-memory.json");

/** The real store, counting its saves. */
function counting(store: EmbeddedStore): LocationStore & { saves: number } {
  const s = Object.assign(Object.create(store) as EmbeddedStore, { saves: 0 });
  s.saveAutopilotMemory = async (text: string) => {
    s.saves++;
    return store.saveAutopilotMemory(text);
  };
  return s;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-ap-memory-"));
  logs = [];
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("the autopilot's memory of failed moves", () => {
  it("what one process saves, the next takes up: a failing move stays backed off across processes", async () => {
    const store = counting(new EmbeddedStore(dir));
    const first = fresh();
    await first.recall(store, log); // nothing saved yet
    first.moves.failed({ shard: "shard-3", target: "node-2", error: "409 shard-exists" }, T0);
    first.moves.failed({ shard: "shard-3", target: "node-2", error: "409 shard-exists" }, T0 + 1000);
    first.layout.failed({ shard: "shard-4", target: "split", error: "target down" }, T0);
    await first.keep(store, log, T0 + 2000);
    expect(store.saves).toBe(1);
    // nothing changed: nothing written
    await first.keep(store, log, T0 + 3000);
    expect(store.saves).toBe(1);

    const second = fresh();
    await second.recall(new EmbeddedStore(dir), log);
    expect(second.moves.active(T0 + 60_000).map((e) => [e.shard, e.target, e.failures])).toEqual([
      ["shard-3", "node-2", 2],
    ]);
    // 2 failures: two minutes after the last
    expect(second.moves.active(T0 + 60_000)[0].until).toBe(T0 + 1000 + 120_000);
    expect(second.layout.active(T0 + 1000).map((e) => e.shard)).toEqual(["shard-4"]);
    // a success there is saved too, and the next process sees the pair free
    second.moves.succeeded("shard-3", "node-2");
    await second.keep(new EmbeddedStore(dir), log);
    const third = fresh();
    await third.recall(new EmbeddedStore(dir), log);
    expect(third.moves.entries()).toEqual([]);
    expect(third.layout.entries()).toHaveLength(1);
    expect(logs).toEqual([]);
  });

  it("a process with a shorter back-off applies it to what it takes up", async () => {
    const a = fresh();
    for (let i = 0; i < 6; i++) a.moves.failed({ shard: "s", target: "n", error: "x" }, T0);
    await a.keep(new EmbeddedStore(dir), log);
    const b = new AutopilotMemory(
      new MoveBackoffs({ initialMs: 1000, maxMs: 5000 }),
      new MoveBackoffs(policy),
    );
    await b.recall(new EmbeddedStore(dir), log);
    expect(b.moves.entries()[0].until).toBe(T0 + 5000);
  });

  it("an unreadable record is logged, the process goes on with what it remembers, and the next save replaces it", async () => {
    const m = fresh();
    m.moves.failed({ shard: "shard-1", target: "node-1", error: "down" }, T0);
    for (const junk of [
      "{not json",
      JSON.stringify({ format: "other/1", moves: [] }),
      JSON.stringify({ format: BACKOFF_MEMORY_FORMAT, moves: 5, layout: [] }),
    ]) {
      writeFileSync(file(), junk);
      logs = [];
      await m.recall(new EmbeddedStore(dir), log);
      expect(logs.join("\n")).toMatch(/memory of failed moves in the store is unreadable/);
      expect(m.moves.entries().map((e) => e.shard)).toEqual(["shard-1"]);
      await m.keep(new EmbeddedStore(dir), log);
      expect(readMemory(readFileSync(file(), "utf8"), m).moves.map((e) => e.shard)).toEqual(["shard-1"]);
    }
  });

  it("an unreadable record is replaced by the next save also when the process remembers nothing (as the log says)", async () => {
    writeFileSync(file(), "garbage{");
    const m = fresh();
    await m.recall(new EmbeddedStore(dir), log);
    expect(logs.join("\n")).toMatch(/unreadable .* it is rewritten at the end of the cycle/);
    await m.keep(new EmbeddedStore(dir), log);
    const r = readMemory(readFileSync(file(), "utf8"), fresh());
    expect([r.moves, r.layout, r.refused]).toEqual([[], [], 0]);
    // and once replaced, an empty memory is not written again
    const store = counting(new EmbeddedStore(dir));
    await m.keep(store, log);
    expect(store.saves).toBe(0);
  });

  it("drops bad entries one by one and says how many", async () => {
    const good = { shard: "shard-1", target: "node-2", failures: 1, failedAt: T0, until: 0, lastError: "e" };
    writeFileSync(
      file(),
      JSON.stringify({
        format: BACKOFF_MEMORY_FORMAT,
        savedAt: T0,
        moves: [good, { ...good, shard: "" }, 7],
        layout: [null],
      }),
    );
    const m = fresh();
    await m.recall(new EmbeddedStore(dir), log);
    expect(m.moves.entries().map((e) => e.shard)).toEqual(["shard-1"]);
    expect(logs).toEqual(["autopilot: dropped 3 unreadable entries of its memory of failed moves"]);
  });

  it("a store that cannot be read or written is logged and changes nothing in the process", async () => {
    mkdirSync(file()); // a directory where the file should be
    const m = fresh();
    m.moves.failed({ shard: "s", target: "n", error: "x" }, T0);
    await m.recall(new EmbeddedStore(dir), log);
    expect(logs.join("\n")).toMatch(
      /cannot read its memory of failed moves from the store .*not the autopilot's memory/,
    );
    expect(m.moves.entries()).toHaveLength(1);
    await m.keep(new EmbeddedStore(join(dir, "no-such-dir")), log);
    expect(logs.join("\n")).toMatch(/cannot save its memory of failed moves in the store/);
    expect(m.moves.entries()).toHaveLength(1);
  });

  it("keeps the saved record bounded: the newest 1,000 of each kind, errors cut to 200 characters", () => {
    const moves = Array.from({ length: 1500 }, (_, i) => ({
      shard: `shard-${i}`,
      target: "node-1",
      failures: 1,
      failedAt: T0 + i,
      until: T0 + i + 60_000,
      lastError: "e".repeat(5000),
    }));
    const text = memoryText(moves, [], T0);
    expect(Buffer.byteLength(text)).toBeLessThan(512 * 1024);
    const back = readMemory(text, { moves: new MoveBackoffs(policy), layout: new MoveBackoffs(policy) });
    expect(back.moves).toHaveLength(1000);
    expect(back.moves[0].shard).toBe("shard-1499");
    expect(back.moves.every((e) => e.lastError.length === 200)).toBe(true);
  });
});
