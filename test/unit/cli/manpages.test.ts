import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { manPages } from "../../../src/manpages.js";
import { repoRoot } from "../../helpers/cli.js";

describe("man pages", () => {
  it("exist for every command and match the CLI (run `npm run man` after changing a command)", () => {
    const pages = manPages();
    expect(pages.length).toBeGreaterThan(4);
    for (const p of pages) {
      expect(readFileSync(join(repoRoot, "man", p.file), "utf8"), p.file).toBe(p.text);
    }
    const onDisk = readdirSync(join(repoRoot, "man")).filter((f) => f.startsWith("shardctl-"));
    expect(onDisk.sort()).toEqual(pages.map((p) => p.file).sort());
  });
});
