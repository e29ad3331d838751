/**
 * How `shardctl reshard --apply` ends when the layout change was not (wholly)
 * carried out: a refusal before any write is exit 3 and "nothing was changed";
 * an execution that stopped after committing some changes must say so (exit 1),
 * never that nothing was changed, and neither may call itself a dry run.
 */
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import * as reshard from "../../../src/commands/reshard.js";
import type { LayoutDiff } from "../../../src/engine/assigner.js";
import type { ReshardResult } from "../../../src/engine/lsmm.js";
import { ExitCode } from "../../../src/errors.js";

class Collect extends Writable {
  text = "";
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

const diff: LayoutDiff = {
  ops: [
    {
      kind: "split",
      shard: "shard-1",
      node: "node-1",
      reason: "hot-segment",
      pieces: [
        { id: "shard-1", ranges: [[1, 10]], load: 1 },
        { id: "shard-13", ranges: [[0, 1]], load: 90 },
      ],
    },
    {
      kind: "split",
      shard: "shard-2",
      node: "node-2",
      reason: "hot-segment",
      pieces: [
        { id: "shard-2", ranges: [[11, 20]], load: 1 },
        { id: "shard-14", ranges: [[10, 11]], load: 90 },
      ],
    },
  ],
  shardsBefore: 12,
  shardsAfter: 14,
  dedicatedAfter: 2,
  heldByDwell: [],
};

function outcome(result: ReshardResult) {
  const out = new Collect();
  const err = new Collect();
  reshard.printReshard({ out, err }, result, false, result.appliedVersion !== undefined);
  return { out: out.text, err: err.text, error: reshard.reshardOutcomeError(result) };
}

describe("reshard --apply that does not go through", () => {
  it("the printed diff of a refused or half-done --apply does not claim to be a dry run", () => {
    for (const result of [
      { diff, baseVersion: 4, notApplied: "node node-2 did not answer" },
      { diff, baseVersion: 4, appliedVersion: 5, notApplied: "1 of 2 change(s) done; then: aborted" },
    ]) {
      const out = new Collect();
      const err = new Collect();
      reshard.printReshard({ out, err }, result, false, result.appliedVersion !== undefined);
      expect(out.text).toMatch(/2 change\(s\): 12 → 14 shards/);
      expect(err.text).not.toMatch(/dry run/);
    }
  });

  it("a change list that stopped half way reports what was committed, exit 1, not 'nothing was changed'", () => {
    const r = outcome({
      diff,
      baseVersion: 4,
      appliedVersion: 5,
      notApplied: "1 of 2 change(s) done; then: migration m-2 aborted: target node-2 did not answer",
    });
    expect(r.out).toMatch(/applied: layout version 4 → 5/);
    expect(r.err).not.toMatch(/dry run/);
    expect(r.error).toBeDefined();
    expect(r.error!.message).not.toMatch(/nothing was changed/);
    expect(r.error!.message).toMatch(/1 of 2 change\(s\) done/);
    expect(r.error!.message).toMatch(/version 4 → 5/);
    expect(r.error!.exitCode).toBe(ExitCode.Failed);
  });

  it("a refusal before any write stays exit 3 with 'nothing was changed', and is not called a dry run", () => {
    const r = outcome({ diff, baseVersion: 4, notApplied: "node node-2 did not answer" });
    expect(r.out).not.toMatch(/applied:/);
    expect(r.err).not.toMatch(/dry run/);
    expect(r.error!.message).toMatch(/not applied: node node-2 did not answer; nothing was changed/);
    expect(r.error!.exitCode).toBe(ExitCode.Precondition);
    expect(r.error!.hint).toMatch(/on a cluster without agents it can be applied/);
    // the agents' first migration failed and was rolled back: nothing changed, and the hint says what to do
    const rolledBack = reshard.reshardOutcomeError(
      { diff, baseVersion: 4, notApplied: "0 of 2 change(s) done; then: aborted" },
      true,
    );
    expect(rolledBack!.exitCode).toBe(ExitCode.Precondition);
    expect(rolledBack!.message).toMatch(/nothing was changed/);
    expect(rolledBack!.hint).toMatch(/shardctl migrations.*shardctl reshard/);
  });

  it("a change that stopped with its shards left fenced (roll-back pending) is exit 1, not 'nothing was changed'", () => {
    const e = reshard.reshardOutcomeError(
      {
        diff,
        baseVersion: 4,
        leftOpen: true,
        notApplied:
          "0 of 2 change(s) done; then: merge of shard-1 aborted (x), but the roll-back did not finish: y",
      },
      true,
    );
    expect(e!.exitCode).toBe(ExitCode.Failed);
    expect(e!.message).not.toMatch(/nothing was changed/);
    expect(e!.message).toMatch(/the change that stopped stays open until its roll-back finishes/);
    expect(e!.hint).toMatch(/migrations --recover/);
  });

  it("a plain dry run still says so and is no error", () => {
    const r = outcome({ diff, baseVersion: 4 });
    expect(r.err).toMatch(/dry run: nothing was changed/);
    expect(r.error).toBeUndefined();
  });
});
