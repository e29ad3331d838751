/** buildBundle's output directory: a path that cannot hold one is a usage error, not a raw errno. */
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { buildBundle } from "../../../src/cluster/bundle.js";
import { UsageError } from "../../../src/errors.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-bundle-");

describe("buildBundle into a directory that cannot be made", () => {
  it("refuses a path through a regular file and a name too long with a UsageError naming it, before bundling", async () => {
    // mkdirSync's recursive threw a raw ENOTDIR / EEXIST / ENAMETOOLONG (an internal error from deploy)
    const d = newDir();
    writeFileSync(join(d, "afile"), "keep me");
    for (const [out, re] of [
      [join(d, "afile", "agent.mjs"), /afile exists and is not a directory/],
      [join(d, "afile", "deeper", "agent.mjs"), /afile exists and is not a directory/],
      [join(d, "a".repeat(300), "agent.mjs"), /too long \(ENAMETOOLONG\)/],
    ] as const) {
      const err = await buildBundle(out, "/nonexistent/entry.ts").catch((e: unknown) => e);
      expect(err, out).toBeInstanceOf(UsageError);
      expect((err as UsageError).message).toMatch(/^cannot create the directory for the agent bundle /);
      expect((err as UsageError).message).toMatch(re);
      expect((err as UsageError).hint).toMatch(/--bundle FILE/);
    }
    expect(existsSync(join(d, "a".repeat(300)))).toBe(false);
  });
});
