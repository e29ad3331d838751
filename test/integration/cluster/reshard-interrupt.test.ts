/**
 * Ctrl-C or SIGTERM during `shardctl reshard --apply` on a local cluster of
 * real agents, where each split or merge is a migration between the agents'
 * shards. The coordinator is stopped by a failpoint after fencing the first
 * merge's shards, sent the signal and continued: it must roll that merge back
 * (the map unchanged, the record aborted), start none of the others, exit 130
 * (143), and leave every shard serving its acknowledged writes, so that a
 * second `reshard --apply` then carries out the whole diff.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { watchedProcess } from "../../helpers/cli.js";
import { tempDir } from "../agent/harness.js";
import {
  clusterCli,
  clusterEnv,
  downLocalCluster,
  keysIn,
  readMapFile,
  stoppedAtFailpoint,
  upLocalCluster,
} from "./local-fixture.js";

const SEGMENTS = 64;
let dir: string;
const env = clusterEnv(SEGMENTS);
const cli = clusterCli(() => dir, env);
const seg = new Segmenter(SEGMENTS);
const FAILPOINT = "migrate.fenced";

/** A local cluster of three agents in a data directory of its own, every shard cold enough to merge. */
async function upCluster(name: string): Promise<void> {
  dir = tempDir(name);
  const config = join(dir, "shardctl.yaml");
  writeFileSync(config, "reshard:\n  minDwellSeconds: 0\n  mergeRate: 1\n");
  env.SHARDCTL_CONFIG = config;
  await upLocalCluster(cli, dir);
}

afterEach(async () => {
  if (dir) await downLocalCluster(cli, dir);
});

/** One acknowledged write to each shard of the map. */
async function writeEveryShard(prefix: string): Promise<Map<string, string>> {
  const acked = new Map<string, string>();
  for (const sh of readMapFile(dir).map.shards) {
    const [k] = keysIn(seg, sh.ranges, `${prefix}-${sh.id}-`);
    const r = await cli("put", k, `${k}-value`);
    expect(r.code, r.err).toBe(0);
    acked.set(k, `${k}-value`);
  }
  return acked;
}

async function expectAllRead(acked: Map<string, string>): Promise<void> {
  for (const [k, v] of acked) {
    const g = await cli("get", k);
    expect(g.code, `${k}: ${g.err}`).toBe(0);
    expect(g.out, k).toBe(v);
  }
}

function reshardApply(failpoint?: string) {
  return watchedProcess(
    ["--data-dir", dir, "reshard", "--apply"],
    failpoint ? { ...env, SHARDCTL_FAILPOINT: failpoint } : env,
  );
}

describe("interrupting reshard --apply", () => {
  for (const [sig, exit] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    it(`${sig} after the first merge's fence: rolled back, nothing else started, exit ${exit}`, async () => {
      await upCluster(`reshard-interrupt-${sig}`);
      const acked = await writeEveryShard(sig);
      const dry = JSON.parse((await cli("reshard", "--json")).out) as { diff: { ops: { kind: string }[] } };
      expect(dry.diff.ops.filter((o) => o.kind === "merge").length).toBeGreaterThanOrEqual(2);
      const before = readMapFile(dir);
      const journalBefore = (await new EmbeddedStore(dir).listMigrations()).records.length;

      const c = reshardApply(FAILPOINT);
      try {
        await stoppedAtFailpoint(c, FAILPOINT);
        c.child.kill(sig);
        c.child.kill("SIGCONT");
        const { code, signal } = await c.exited;
        expect(signal, c.err()).toBeNull();
        expect(code, c.err()).toBe(exit);
        expect(c.err()).toMatch(new RegExp(`${sig}: finishing the step in flight`));
      } finally {
        if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill("SIGKILL");
      }

      // the map is as it was: the merge in flight was rolled back, the others never started
      const after = readMapFile(dir);
      expect(after.map.shards).toEqual(before.map.shards);
      // one journal record, for the merge that was stopped, ended as aborted
      const records = (await new EmbeddedStore(dir).listMigrations()).records.slice(journalBefore);
      expect(records.map((r) => r.record.phase)).toEqual(["aborted"]);
      await expectAllRead(acked);

      // nothing is left fenced: the next reshard --apply carries out the whole diff
      const again = reshardApply();
      const { code } = await again.exited;
      expect(code, again.err()).toBe(0);
      const merged = readMapFile(dir);
      expect(merged.map.shards.length).toBeLessThan(before.map.shards.length);
      await expectAllRead(acked);
    }, 120_000);
  }
});
