/**
 * What the routing client reads from an agent's answers besides a write's body (that is
 * write-answer.test.ts): a GET's x-lsn / x-timestamp, a 421's redirect hint, a 503's retry-after,
 * and the hint given when the last answer was 503 shutting-down. A real agent always sends
 * well-formed headers and hints (its release endpoint refuses a malformed redirect), so the
 * malformed ones cannot be produced by the integration tests' real agents: something else
 * answering at the address is what sends them. This is the parsing alone, without I/O.
 */
import { describe, expect, it } from "vitest";
import { getAnswer, giveUpHint, parseErrorAnswer, retryAfterMs } from "../../../src/client/shard-client.js";
import { ExitCode, UserError } from "../../../src/errors.js";

const site = { key: "user:42", address: "10.0.0.7:7401", shardId: "shard-3" };

function res(status: number, body: string, headers: Record<string, string> = {}) {
  return { status, headers, body: Buffer.from(body) };
}

describe("getAnswer", () => {
  it("reads the value, its LSN and its timestamp", () => {
    const r = getAnswer(site, res(200, "hi", { "x-lsn": "7", "x-timestamp": "1700000000123" }));
    expect(r).toEqual({ value: Buffer.from("hi"), lsn: 7, timestamp: 1700000000123 });
  });

  it("refuses a missing or malformed x-lsn / x-timestamp, naming the agent and the header", () => {
    const bad = ["", " 7", "7 ", "-1", "1.5", "1e3", "0x10", "NaN", "abc", "9007199254740993", "７"];
    for (const [header, other] of [
      ["x-lsn", "x-timestamp"],
      ["x-timestamp", "x-lsn"],
    ]) {
      const cases: Record<string, string>[] = [
        { [other]: "1" },
        ...bad.map((v) => ({ [header]: v, [other]: "1" })),
      ];
      for (const headers of cases) {
        let err: unknown;
        try {
          getAnswer(site, res(200, "hi", headers));
        } catch (e) {
          err = e;
        }
        expect(err, JSON.stringify(headers)).toBeInstanceOf(UserError);
        const e = err as UserError;
        expect(e.message).toContain(site.address);
        expect(e.message).toContain(header);
        expect(e.message).toContain("user:42");
        expect(e.exitCode).toBe(ExitCode.Failed);
        expect(e.hint).toMatch(/shardctl nodes/);
      }
    }
  });
});

describe("parseErrorAnswer: the redirect hint of a 421", () => {
  const body = (redirect: unknown) =>
    JSON.stringify({ error: "not-owner", message: "shard-3 moved", redirect });

  it("takes a well-formed hint", () => {
    for (const address of ["10.0.0.8:7401", "node-2.example:80", "[::1]:7401", "localhost:65535"]) {
      expect(parseErrorAnswer(res(421, body({ node: "node-2", address, epoch: 4 }))).redirect).toEqual({
        node: "node-2",
        address,
        epoch: 4,
      });
    }
  });

  it("treats a malformed hint as no hint, and says so in the answer's text", () => {
    const hints: unknown[] = [
      { node: "node-2", address: "10.0.0.8", epoch: 4 }, // no port
      { node: "node-2", address: "10.0.0.8:0", epoch: 4 },
      { node: "node-2", address: "10.0.0.8:65536", epoch: 4 },
      { node: "node-2", address: "10.0.0.8:1e3", epoch: 4 },
      { node: "node-2", address: "10.0.0.8: 80", epoch: 4 },
      { node: "node-2", address: "bad host:80", epoch: 4 },
      { node: "node-2", address: ":80", epoch: 4 },
      { node: "node-2", address: "", epoch: 4 },
      { node: "node-2", address: 7401, epoch: 4 },
      { node: "node-2", address: "10.0.0.8:7401", epoch: "4" },
      { node: "node-2", address: "10.0.0.8:7401", epoch: 4.5 },
      { node: "node-2", address: "10.0.0.8:7401", epoch: -1 },
      { node: "node-2", address: "10.0.0.8:7401", epoch: 2 ** 60 },
      { node: "node-2", address: "10.0.0.8:7401" },
      { node: "", address: "10.0.0.8:7401", epoch: 4 },
      { node: 2, address: "10.0.0.8:7401", epoch: 4 },
      { address: "10.0.0.8:7401", epoch: 4 },
      "node-2@10.0.0.8:7401",
      [],
      42,
    ];
    for (const hint of hints) {
      const info = parseErrorAnswer(res(421, body(hint)));
      expect(info.redirect, JSON.stringify(hint)).toBeUndefined();
      expect(info.error).toBe("not-owner");
      expect(info.message).toContain("shard-3 moved");
      expect(info.message).toMatch(/malformed redirect hint .* ignored/);
    }
    // null is what an agent sends when it has no hint: nothing to say about it
    expect(parseErrorAnswer(res(421, body(null))).message).toBe("shard-3 moved");
  });
});

describe("retryAfterMs", () => {
  it("reads whole seconds, and ignores what is not a sane number of them", () => {
    expect(retryAfterMs({ "retry-after": "1" })).toBe(1000);
    expect(retryAfterMs({ "retry-after": "0" })).toBe(0);
    expect(retryAfterMs({ "retry-after": "30" })).toBe(30_000);
    for (const v of [
      "",
      "-1",
      "1.5",
      "abc",
      "1e3",
      " 1",
      "Wed, 21 Oct 2015 07:28:00 GMT",
      "86400",
      "99999999999",
    ]) {
      expect(retryAfterMs({ "retry-after": v }), v).toBeUndefined();
    }
    expect(retryAfterMs({})).toBeUndefined();
  });
});

describe("giveUpHint", () => {
  it("says an agent shutting down is stopping, not that the agents may be down", () => {
    const hint = giveUpHint(503, "shutting-down", "shard-3", "10.0.0.7:7401");
    expect(hint).toMatch(/10\.0\.0\.7:7401 is stopping/);
    expect(hint).toMatch(/retry/);
    expect(hint).toMatch(/shardctl nodes/);
    expect(hint).not.toMatch(/agents are up/);
    // an unknown 503 is still treated as an agent that cannot serve
    expect(giveUpHint(503, "overloaded", "shard-3", "10.0.0.7:7401")).toMatch(/agents are up/);
  });
});
