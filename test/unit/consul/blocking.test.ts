import { describe, expect, it } from "vitest";
import { blockingLoop } from "../../../src/consul/blocking.js";

/** Drives the loop with a scripted sequence of answers and a virtual clock. */
async function drive(answers: (number | Error)[]) {
  const ac = new AbortController();
  let clock = 0;
  const sentIndexes: number[] = [];
  const seen: number[] = [];
  const sleeps: number[] = [];
  const errors: number[] = [];
  let i = 0;
  await blockingLoop<{ index: number }>({
    signal: ac.signal,
    now: () => clock,
    sleep: async (ms) => {
      sleeps.push(ms);
      clock += ms;
    },
    fetch: async (index) => {
      sentIndexes.push(index);
      clock += 1;
      if (i >= answers.length) {
        ac.abort();
        throw new Error("done");
      }
      const a = answers[i++];
      if (a instanceof Error) throw a;
      return { index: a };
    },
    onResult: (r) => {
      seen.push(r.index);
    },
    onError: (_e, backoff) => errors.push(backoff),
    minIntervalMs: 100,
    initialBackoffMs: 250,
    maxBackoffMs: 1000,
  });
  return { sentIndexes, seen, sleeps, errors };
}

describe("the blocking-query loop", () => {
  it("starts at 0, then blocks on the last index, and ignores wakeups without change", async () => {
    const r = await drive([5, 5, 5, 9]);
    expect(r.sentIndexes.slice(0, 4)).toEqual([0, 5, 5, 5]);
    expect(r.seen).toEqual([5, 9]);
  });

  it("never sends an index below 1 once started", async () => {
    const r = await drive([0, 0, 3]);
    expect(r.sentIndexes.slice(0, 3)).toEqual([0, 1, 1]);
  });

  it("resets to 0 when the index goes backwards", async () => {
    const r = await drive([10, 4, 4, 6]);
    expect(r.sentIndexes.slice(0, 4)).toEqual([0, 10, 0, 4]);
    // the fresh read after the reset is delivered again; the store compares versions
    expect(r.seen).toEqual([10, 4, 4, 6]);
  });

  it("is rate-limited: a server answering at once cannot make it spin", async () => {
    const r = await drive([1, 2, 3, 4, 5]);
    // every query after the first waited for the rest of the 100 ms interval
    expect(r.sleeps.filter((ms) => ms > 0).length).toBeGreaterThanOrEqual(4);
    expect(r.sleeps.every((ms) => ms <= 100)).toBe(true);
  });

  it("backs off exponentially on errors, capped, and resets after a success", async () => {
    const e = new Error("down");
    const r = await drive([e, e, e, e, 7, e]);
    expect(r.errors).toEqual([250, 500, 1000, 1000, 250]);
    expect(r.seen).toEqual([7]);
  });
});
