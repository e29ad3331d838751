/**
 * A roll-back or roll-forward step that cannot reach its agent says so in
 * words, naming the step's node and address, not with the socket's error text
 * ("connect ECONNREFUSED …"). The agents are addresses where nothing listens
 * (free loopback ports): a real connection refused.
 */
import { afterAll, describe, expect, it } from "vitest";
import { AgentRpc } from "../../../src/cluster/agent-rpc.js";
import { rollBack, rollForward } from "../../../src/cluster/migrate.js";
import type { MigrationRecord } from "../../../src/engine/migration.js";
import { freePorts } from "../../helpers/ports.js";

const rpc = new AgentRpc({ token: "t", timeoutMs: 2000 });
afterAll(() => rpc.pool.destroy());

async function deadNodes(): Promise<{ id: string; address: string; zone: string }[]> {
  const [a, b] = await freePorts(2);
  return [
    { id: "node-1", address: `127.0.0.1:${a}`, zone: "a" },
    { id: "node-3", address: `127.0.0.1:${b}`, zone: "c" },
  ];
}

function record(): MigrationRecord {
  return {
    id: "m-1",
    shard: "shard-7",
    source: "node-1",
    target: "node-3",
    fromEpoch: 4,
    planVersion: 2,
    phase: "aborted",
    term: 0,
    startedAt: 0,
    phaseAt: {},
    bytesCopied: 0,
    entriesCopied: 0,
    rounds: 0,
  };
}

describe("migration steps against an agent that cannot be reached", () => {
  it("roll-back: unfence and drop name the node and say the connection was refused", async () => {
    const [source, target] = await deadNodes();
    const problems = await rollBack(rpc, record(), { source, target, fenced: true, targetCreated: true });
    expect(problems).toEqual([
      `unfence on node-1: cannot reach ${source.address} (connection refused)`,
      `drop on node-3: cannot reach ${target.address} (connection refused)`,
    ]);
  });

  it("roll-forward: activate and release name the node", async () => {
    const [source, target] = await deadNodes();
    const { problems, activatedAt } = await rollForward(rpc, record(), { source, target }, 1000);
    expect(activatedAt).toBeUndefined();
    expect(problems.join("\n")).toContain(
      `activate on node-3: cannot reach ${target.address} (connection refused)`,
    );
    for (const p of problems) {
      expect(p).not.toMatch(/ECONNREFUSED|unexpected/);
      expect(p).toMatch(/cannot reach 127\.0\.0\.1:\d+ \(connection refused\)$/);
    }
  });
});
