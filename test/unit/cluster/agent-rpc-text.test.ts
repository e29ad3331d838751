/** How errors about an agent's answer read: its status and error code, or that no answer came. */
import { describe, expect, it } from "vitest";
import { failText } from "../../../src/cluster/agent-rpc.js";

describe("failText", () => {
  it("an answer: its status, error code and message", () => {
    expect(
      failText("drop of shard-13 on node-2", 409, { error: "still-owned", message: "the shard is owned" }),
    ).toBe("drop of shard-13 on node-2 answered 409 still-owned: the shard is owned");
  });

  it("an answer without an error code: no gap where the code would be", () => {
    expect(failText("release of shard-2 on node-1", 500, { message: "disk full" })).toBe(
      "release of shard-2 on node-1 answered 500: disk full",
    );
  });

  it("a body that is not the agent's error: shown as JSON", () => {
    expect(failText("receive on node-3", 502, "Bad Gateway")).toBe(
      'receive on node-3 answered 502: "Bad Gateway"',
    );
  });

  it("no answer (status 0, the request failed): what failed, not 'answered 0'", () => {
    const text = failText("drop of shard-13 on node-2", 0, {
      message: "cannot reach 127.0.0.1:20011 (connection refused)",
    });
    expect(text).toBe("drop of shard-13 on node-2: cannot reach 127.0.0.1:20011 (connection refused)");
    expect(failText("reshape of shard-1 on node-1", 0, undefined)).toBe(
      "reshape of shard-1 on node-1: no answer",
    );
  });
});
