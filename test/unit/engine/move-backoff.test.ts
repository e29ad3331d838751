/** The back-off schedule of failed moves (pure): doubling, the cap, the reset, forgetting, hostile policies. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { UsageError } from "../../../src/errors.js";
import {
  activeBackoffs,
  backoffDelayMs,
  describeBackoff,
  parseBackoffEntries,
  pruneBackoffs,
  recordMoveFailure,
  recordMoveSuccess,
  validateBackoffPolicy,
  type MoveBackoffEntry,
} from "../../../src/engine/move-backoff.js";

const policy = { initialMs: 1000, maxMs: 8000 };
const T0 = Date.UTC(2026, 0, 1, 12);

function failTimes(n: number, shard = "shard-1", target = "node-2", at = T0): MoveBackoffEntry[] {
  let s: MoveBackoffEntry[] = [];
  for (let i = 0; i < n; i++) s = recordMoveFailure(s, { shard, target, error: `refused ${i}` }, at, policy);
  return s;
}

describe("the back-off schedule", () => {
  it("starts at the initial back-off and doubles with each failure in a row, up to the cap", () => {
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelayMs(n, policy))).toEqual([
      1000, 2000, 4000, 8000, 8000, 8000,
    ]);
  });

  it("never overflows, whatever the count", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10_000_000 }),
        fc.integer({ min: 1, max: 1e9 }),
        fc.integer({ min: 0, max: 1e9 }),
        (failures, initialMs, extra) => {
          const p = { initialMs, maxMs: initialMs + extra };
          const d = backoffDelayMs(failures, p);
          expect(Number.isFinite(d)).toBe(true);
          expect(d).toBeGreaterThanOrEqual(p.initialMs);
          expect(d).toBeLessThanOrEqual(p.maxMs);
        },
      ),
    );
  });

  it("a failure backs the pair off until now + its delay, and counts failures in a row", () => {
    const s = failTimes(3);
    expect(s).toEqual([
      {
        shard: "shard-1",
        target: "node-2",
        failures: 3,
        failedAt: T0,
        until: T0 + 4000,
        lastError: "refused 2",
      },
    ]);
    expect(describeBackoff(s[0])).toBe(
      `shard-1 → node-2 until ${new Date(T0 + 4000).toISOString()} (3 failures: refused 2)`,
    );
  });

  it("pairs are independent: another target or shard is not backed off", () => {
    let s = failTimes(2);
    s = recordMoveFailure(s, { shard: "shard-1", target: "node-3", error: "down" }, T0, policy);
    s = recordMoveFailure(s, { shard: "shard-2", target: "node-2", error: "down" }, T0, policy);
    const by = (shard: string, target: string) => s.find((e) => e.shard === shard && e.target === target);
    expect(by("shard-1", "node-2")?.failures).toBe(2);
    expect(by("shard-1", "node-3")?.failures).toBe(1);
    expect(by("shard-2", "node-2")?.failures).toBe(1);
  });

  it("a success resets the pair: its next failure starts at the initial back-off again", () => {
    let s = failTimes(4);
    s = recordMoveSuccess(s, "shard-1", "node-2");
    expect(s).toEqual([]);
    s = recordMoveFailure(s, { shard: "shard-1", target: "node-2", error: "x" }, T0 + 50_000, policy);
    expect(s[0]).toMatchObject({ failures: 1, until: T0 + 51_000 });
  });

  it("only pairs whose back-off has not ended are active, soonest end first", () => {
    let s = failTimes(3, "shard-1"); // until T0 + 4000
    s = recordMoveFailure(s, { shard: "shard-2", target: "node-2", error: "x" }, T0, policy); // T0 + 1000
    expect(activeBackoffs(s, T0 + 500).map((e) => e.shard)).toEqual(["shard-2", "shard-1"]);
    expect(activeBackoffs(s, T0 + 1000).map((e) => e.shard)).toEqual(["shard-1"]);
    expect(activeBackoffs(s, T0 + 4000)).toEqual([]);
  });

  it("forgets a pair quiet for the cap after its back-off ended, and pairs of shards gone from the map", () => {
    const s = [...failTimes(2, "shard-1"), ...failTimes(1, "shard-2")];
    // shard-1 ends at T0+2000, shard-2 at T0+1000; the cap is 8000
    expect(pruneBackoffs(s, T0 + 9500, policy).map((e) => e.shard)).toEqual(["shard-1"]);
    expect(pruneBackoffs(s, T0 + 10_001, policy)).toEqual([]);
    expect(pruneBackoffs(s, T0, policy, new Set(["shard-2"])).map((e) => e.shard)).toEqual(["shard-2"]);
    // a forgotten pair's next failure starts over
    const next = recordMoveFailure(
      pruneBackoffs(s, T0 + 20_000, policy),
      {
        shard: "shard-1",
        target: "node-2",
        error: "x",
      },
      T0 + 20_000,
      policy,
    );
    expect(next[0]).toMatchObject({ failures: 1, until: T0 + 21_000 });
  });
});

describe("hostile back-off policies", () => {
  it.each([
    [{ initialMs: Number.NaN, maxMs: 1000 }, /initialMs must be a positive number, got NaN/],
    [{ initialMs: -5, maxMs: 1000 }, /initialMs must be a positive number, got -5/],
    [{ initialMs: 0, maxMs: 1000 }, /initialMs must be a positive number, got 0/],
    [{ initialMs: Infinity, maxMs: Infinity }, /initialMs must be a positive number, got Infinity/],
    [{ initialMs: 1000, maxMs: Number.NaN }, /maxMs must be a positive number, got NaN/],
    [{ initialMs: 1000, maxMs: -1 }, /maxMs must be a positive number/],
    [{ initialMs: 1000, maxMs: 500 }, /maxMs \(500\) must not be below initialMs \(1000\)/],
    [{ initialMs: "60" as unknown as number, maxMs: 1000 }, /initialMs must be a positive number, got 60/],
  ])("%j is refused with a usage error that names the value", (p, message) => {
    expect(() => validateBackoffPolicy(p)).toThrow(UsageError);
    expect(() => validateBackoffPolicy(p)).toThrow(message);
  });

  it("names the setting it came from", () => {
    expect(() =>
      validateBackoffPolicy(
        { initialMs: -1, maxMs: 1 },
        { initial: "--move-backoff", max: "--move-backoff-max" },
      ),
    ).toThrow(/^--move-backoff must be a positive number/);
  });
});

describe("a back-off state read back from the store", () => {
  const good = (o: Partial<MoveBackoffEntry> = {}) => ({
    shard: "shard-1",
    target: "node-2",
    failures: 2,
    failedAt: T0,
    until: T0 + 999_999,
    lastError: "409 shard-exists",
    ...o,
  });

  it("takes each good entry, with its back-off recomputed under the reader's policy", () => {
    const r = parseBackoffEntries([good(), good({ shard: "shard-2", failures: 9 })], policy);
    expect(r.refused).toBe(0);
    // 2 failures: 2 s after the last one, whatever `until` the writer had
    expect(r.entries[0]).toEqual({ ...good(), until: T0 + 2000 });
    expect(r.entries[1].until).toBe(T0 + 8000);
    // the state round-trips through the schedule's own functions
    expect(activeBackoffs(r.entries, T0 + 1000).map((e) => e.shard)).toEqual(["shard-1", "shard-2"]);
  });

  it("drops what does not parse, entry by entry, and never half takes one", () => {
    const hostile: unknown[] = [
      null,
      "shard-1",
      [],
      good({ shard: "" }),
      good({ shard: "x".repeat(513) }),
      good({ target: 7 as unknown as string }),
      good({ failures: 0 }),
      good({ failures: 1.5 }),
      good({ failedAt: Number.NaN }),
      good({ failedAt: -1 }),
      good({ lastError: undefined as unknown as string }),
      { ...good(), failures: "2" },
      good(),
      good(), // the same pair twice: the first one counts
    ];
    const r = parseBackoffEntries(hostile, policy);
    expect(r.entries).toEqual([{ ...good(), until: T0 + 2000 }]);
    expect(r.refused).toBe(hostile.length - 1);
    expect(
      parseBackoffEntries([good({ lastError: "e".repeat(5000) })], policy).entries[0].lastError,
    ).toHaveLength(2000);
  });

  it("refuses a value that is not a state at all, or too large a one", () => {
    for (const v of [undefined, null, {}, "[]", 3])
      expect(() => parseBackoffEntries(v, policy)).toThrow(UsageError);
    expect(() => parseBackoffEntries(new Array(10_001).fill(good()), policy)).toThrow(
      /at most 10000 entries/,
    );
  });
});
