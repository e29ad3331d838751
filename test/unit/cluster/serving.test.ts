/** describeServing: a coordinator's abort hint says what the agent answered, not what the map says. */
import { describe, expect, it } from "vitest";
import { describeServing } from "../../../src/cluster/serving.js";

describe("describeServing", () => {
  it("an owned shard is served, at the epoch the agent answered", () => {
    expect(
      describeServing("shard-5", "node-2", 1, { status: 200, body: { state: "owned", epoch: 3 } }),
    ).toEqual({
      served: true,
      text: "shard-5 is still served by node-2 at epoch 3",
    });
  });

  it("a released shard is not served: its state, epoch and redirect, and that the map is behind", () => {
    const d = describeServing("shard-5", "node-2", 1, {
      status: 200,
      body: { state: "not-owned", epoch: 2, redirect: { node: "node-3", epoch: 2 } },
    });
    expect(d.served).toBe(false);
    expect(d.text).toMatch(/^shard-5 is not-owned at epoch 2 on node-2, redirecting to node-3 at epoch 2; /);
    expect(d.text).toMatch(/the location map says epoch 1: it is older than the agents/);
    expect(d.text).not.toMatch(/still served/);
  });

  it("a fenced shard at the map's epoch is not served, and the map is not blamed", () => {
    const d = describeServing("shard-5", "node-2", 4, { status: 200, body: { state: "fenced", epoch: 4 } });
    expect(d).toEqual({ served: false, text: "shard-5 is fenced at epoch 4 on node-2" });
  });

  it("a failed shard, a missing one, an error answer and no answer", () => {
    expect(
      describeServing("s", "n", 1, { status: 200, body: { state: "failed", epoch: 1, failed: "disk" } }),
    ).toEqual({ served: false, text: "s is refused on n: disk" });
    expect(describeServing("s", "n", 1, { status: 404, body: {} })).toEqual({
      served: false,
      text: "n holds no s",
    });
    expect(describeServing("s", "n", 1, { status: 401, body: { error: "unauthorized" } }).text).toBe(
      "could not learn from n what it serves of s (it answered 401 unauthorized)",
    );
    expect(describeServing("s", "n", 1, { status: 0, error: "ECONNREFUSED" }).text).toBe(
      "could not learn from n what it serves of s (ECONNREFUSED)",
    );
  });
});
