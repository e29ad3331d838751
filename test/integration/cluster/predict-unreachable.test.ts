/**
 * `predict` when an agent does not answer: the forecast is printed without that node's accesses
 * (it may show less traffic than there is), so the exit status is 1 and --json names the node
 * under "unreachable". Before, it was an all-zero forecast with exit 0 and only a warning on
 * stderr: a script could not tell "no traffic" from "no data". Three real agents (`up --local`).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { localClusterSuite, until } from "./local-fixture.js";
import { processAlive } from "../../../src/store/embedded.js";
import { cli as runShardctl } from "../../helpers/cli.js";

const cluster = localClusterSuite("predict-unreachable");
const { cli } = cluster;

describe("predict with an agent down", () => {
  it("a token every agent refuses is named as such (not as agents down), exit 1", async () => {
    const r = await runShardctl(["--data-dir", cluster.dir, "predict", "--key", "k3"], {
      ...cluster.env,
      SHARDCTL_TOKEN: "not-the-agents-token",
    });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /error: the forecast lacks the accesses counted by node-1, node-2, node-3 \(refused our token: 401\)/,
    );
    expect(r.err).toMatch(/hint: give the agents' token/);
    expect(r.err).not.toMatch(/start the agents/);
  });

  it("prints the forecast, names the node under unreachable, and exits 1", async () => {
    const ok = await cli("predict", "--key", "k3", "--json");
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(ok.out)).not.toHaveProperty("unreachable");
    const pid = Number(readFileSync(join(cluster.dir, "local", "node-3", "agent.pid"), "utf8"));
    process.kill(pid, "SIGTERM");
    await until(
      () => !processAlive(pid),
      20_000,
      () => "node-3 did not stop",
    );
    const r = await cli("predict", "--key", "k3", "--json");
    expect(r.code).toBe(1);
    const p = JSON.parse(r.out) as { unreachable: { node: string; error: string }[]; total: unknown };
    expect(p.total).toBeDefined();
    expect(p.unreachable.map((u) => u.node)).toEqual(["node-3"]);
    expect(r.err).toMatch(/error: the forecast lacks the accesses counted by node-3 \(no usable answer\)/);
    expect(r.err).toMatch(/hint: start the agents that did not answer/);
  });
});
