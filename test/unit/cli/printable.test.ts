/**
 * Keys and other outside text reach the terminal with their control
 * characters escaped: a key holding ESC [2J used to clear the screen when
 * `locate` printed it, and a tab or newline broke the table.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { printable, renderTable } from "../../../src/output.js";
import { cli } from "../../helpers/cli.js";

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

describe("printable", () => {
  it("escapes control characters and bidirectional overrides, and leaves other text alone", () => {
    expect(printable("x\u001b[2J\u001b[31mRED")).toBe("x\\x1b[2J\\x1b[31mRED");
    expect(printable("a\tb\nc\rd")).toBe("a\\tb\\nc\\rd");
    expect(printable("\u0000\u007f\u0085\u202e\u2066")).toBe("\\x00\\x7f\\x85\\u202e\\u2066");
    expect(printable("user:42 é 😀 ß")).toBe("user:42 é 😀 ß");
    expect(printable("two\nlines", true)).toBe("two\nlines");
    expect(printable("two\n\u001blines", true)).toBe("two\n\\x1blines");
  });

  it("never lets a control character through, whatever the text", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), (s) => {
        expect(printable(s)).not.toMatch(CONTROL);
        expect(printable(s, true).replace(/\n/g, "")).not.toMatch(CONTROL);
      }),
    );
  });

  it("is applied to every table cell", () => {
    const t = renderTable(["key"], [["a\u001b[2Jb"]]);
    expect(t).toContain("a\\x1b[2Jb");
    expect(t).not.toContain("\u001b");
  });
});

describe("commands that print a key", () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "shardctl-printable-"));
    env = { SHARDCTL_DATA_DIR: join(dir, "data"), HOME: dir };
    expect((await cli(["init"], env)).code).toBe(0);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("locate shows the key escaped in its table, and exactly in --json", async () => {
    const key = "x\u001b[2J\u001b[31mRED\tb\nc";
    const r = await cli(["locate", key], env);
    expect(r.code, r.err).toBe(0);
    expect(r.out).not.toContain("\u001b");
    expect(r.out).toContain("x\\x1b[2J\\x1b[31mRED\\tb\\nc");
    const j = await cli(["locate", key, "--json"], env);
    expect((JSON.parse(j.out) as { key: string }).key).toBe(key);
  });

  it("predict's heading and an error quoting a key are escaped too", async () => {
    const r = await cli(["predict", "--key", "k\u001b]0;title\u0007"], env);
    expect(r.out + r.err).not.toContain("\u0007");
    expect(r.out + r.err).not.toContain("\u001b");
    const bad = await cli(["--config", join(dir, "no\u001b[31msuch.yaml"), "shards"], env);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("no\\x1b[31msuch.yaml does not exist");
    expect(bad.err).not.toContain("\u001b");
  });
});
