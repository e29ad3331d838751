/**
 * SIGTERM or SIGINT to the autopilot while its reshard stage carries out a
 * layout change (three real agents, the embedded store): the change in
 * flight finishes, the changes after it and the migration stage are not
 * started, and the process exits after saying so (0 as a service, 143 with
 * --once). Before, the signal was
 * only seen at the end of the cycle: every remaining split and merge, then
 * the migration stage, ran after it.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { LayoutOp } from "../../../src/engine/assigner.js";
import { cli as runShardctl, watchedProcess } from "../../helpers/cli.js";
import { hasOwnShard, stoppedAtFailpoint, localClusterSuite, twoBusyShards } from "./local-fixture.js";

const SEGMENTS = 64;
const cluster = localClusterSuite("autopilot-stop", SEGMENTS);
const { env, seg } = cluster;

/** Whether the segment of `key` has a shard of its own. */
const dedicated = (key: string) => hasOwnShard(cluster.dir, seg, key);

describe("stopping the autopilot in its reshard stage", () => {
  // the standing autopilot is a service: stopped, it exits 0; a run with --once exits as
  // `migrate --apply` does when a signal stopped it (130, 143)
  const cases = [
    { sig: "SIGTERM", once: false, code: 0 },
    { sig: "SIGINT", once: false, code: 0 },
    { sig: "SIGTERM", once: true, code: 143 },
  ] as const;
  for (const { sig, once, code: wanted } of cases) {
    const name = `${sig}${once ? " to autopilot --once" : ""}`;
    it(`${name} during a split: that split finishes, the next one and the migration stage are not started, exit ${wanted}`, async () => {
      const tag = `${sig}${once ? "-once" : ""}`;
      const { x, keyX, keyY, c } = await twoBusyShards(cluster, tag, (s) => !s.id.includes("split"));
      const cfg = join(cluster.dir, `stop-${tag}.yaml`);
      writeFileSync(
        cfg,
        "reshard:\n  splitRate: 0.05\n  mergeRate: 0\n  shardLoadCap: 100000\n  minDwellSeconds: 0\n",
      );
      const dry = await runShardctl(["--data-dir", cluster.dir, "--config", cfg, "reshard", "--json"], env);
      expect(dry.code, dry.err).toBe(0);
      const ops = (JSON.parse(dry.out) as { diff: { ops: LayoutOp[] } }).diff.ops;
      expect(ops.length, dry.out).toBeGreaterThanOrEqual(2);
      const first = ops[0] as Extract<LayoutOp, { kind: "split" }>;
      const [firstKey, secondKey] = first.shard === x.id ? [keyX, keyY] : [keyY, keyX];

      const p = watchedProcess(
        ["--data-dir", cluster.dir, "autopilot", ...(once ? ["--once"] : ["--interval", "0.3"])],
        {
          ...env,
          SHARDCTL_CONFIG: cfg,
          SHARDCTL_FAILPOINT: "migrate.copying",
        },
      );
      // stopped by the failpoint inside the first change; the signal arrives there
      await stoppedAtFailpoint(p, "migrate.copying");
      p.child.kill(sig);
      p.child.kill("SIGCONT");
      const { code, signal } = await p.exited;
      const log = p.err();
      expect(signal, log).toBeNull();
      expect(code, log).toBe(wanted);
      expect(log).toContain(`${sig}: stopping: the step in flight finishes, no other is started`);
      if (once) expect(log).toContain(`error: ${sig}: the autopilot stopped; the step in flight finished`);
      expect(log).toMatch(
        /1 of \d+ change\(s\) done; then the autopilot is stopping .*: the rest was not started/,
      );
      // no migration stage in that cycle
      expect(log).not.toMatch(/migrations: \d+ move/);
      expect(dedicated(firstKey), log).toBe(true);
      expect(dedicated(secondKey), log).toBe(false);
      // and both keys are served, with their last writes
      expect((await c.get(keyX))?.value.toString()).toBe("x59");
      expect((await c.get(keyY))?.value.toString()).toBe("y59");
      c.close();
    }, 120_000);
  }
});
