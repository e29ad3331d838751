/** The hint after `migrations --recover` left records open: what to do depends on why. */
import { describe, expect, it } from "vitest";
import { recoveryHint } from "../../../src/commands/migrate.js";

describe("recoveryHint", () => {
  it("agents that did not answer: bring them back", () => {
    expect(
      recoveryHint([
        { why: "drop of shard-13 on node-2: cannot reach 127.0.0.1:20011 (connection refused)" },
      ]),
    ).toMatch(/^bring the agents named above back/);
  });

  it("an agent that answered and refused is not down: no advice to bring it back", () => {
    const hint = recoveryHint([
      { why: "drop of shard-13 on node-2: cannot reach 127.0.0.1:20011 (connection refused)" },
      { why: "reshape of shard-1 on node-1 answered 409 stale-epoch: epoch 2 is stale" },
    ]);
    expect(hint).not.toMatch(/bring the agents/);
    expect(hint).toMatch(/say what each agent answered/);
  });
});
