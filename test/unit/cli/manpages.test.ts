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

  it("are all listed in package.json's man field, so that npm installs them (man shardctl)", () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { man?: string[] };
    const pages = readdirSync(join(repoRoot, "man"))
      .filter((f) => f.endsWith(".1"))
      .map((f) => `./man/${f}`);
    expect(pages).toContain("./man/shardctl.1");
    expect([...(pkg.man ?? [])].sort()).toEqual(pages.sort());
  });

  it("shardctl(1) names every command's page under SEE ALSO", () => {
    const main = readFileSync(join(repoRoot, "man", "shardctl.1"), "utf8");
    const seeAlso = main.slice(main.indexOf(".SH SEE ALSO"));
    expect(seeAlso.startsWith(".SH SEE ALSO")).toBe(true);
    for (const p of manPages()) {
      const name = p.file.replace(/\.1$/, "").replace(/-/g, "\\-");
      expect(seeAlso, p.file).toContain(`.BR ${name} (1)`);
    }
  });
});
