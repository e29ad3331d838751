import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LocalExecutor, shellJoin, shellQuote } from "../../../src/cluster/ssh.js";

const local = new LocalExecutor();

/** What `sh` makes of each quoted word: printf %s WORD, NUL-separated, all in one shell. */
async function throughShell(words: string[]): Promise<string[]> {
  const script = words.map((w) => `${shellJoin(["printf", "%s", w])}; printf '\\000'`).join("\n");
  const r = await local.exec(["sh", "-c", script]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.split("\0").slice(0, -1);
}

const HOSTILE = [
  "",
  " ",
  "plain",
  "it's",
  "'",
  "''",
  "'\\''",
  '"double" quotes',
  "$(touch /tmp/pwned)",
  "`touch /tmp/pwned`",
  "${HOME}",
  "$HOME",
  "a;b",
  "a && b || c",
  "a | b",
  "> /etc/passwd",
  "line\nbreak",
  "tab\there",
  "back\\slash",
  "glob*?[a]",
  "~root",
  "-rf",
  "--",
  "#comment",
  "!history",
  "é ünïcødé 🚀",
  "\r\n",
  "a'b\"c$d`e\\f",
];

describe("shellQuote", () => {
  it("leaves safe words alone and single-quotes the rest", () => {
    expect(shellQuote("abc-1.2_3/x:y@z%+=,")).toBe("abc-1.2_3/x:y@z%+=,");
    expect(shellQuote("")).toBe("''");
    expect(shellQuote("a b")).toBe("'a b'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(shellQuote("$(x)")).toBe("'$(x)'");
    expect(shellQuote("`x`")).toBe("'`x`'");
    expect(shellQuote("a\nb")).toBe("'a\nb'");
  });

  it("refuses a NUL byte, which no argv can carry", () => {
    expect(() => shellQuote("a\0b")).toThrow(/NUL/);
  });

  it("refuses an empty command", () => {
    expect(() => shellJoin([])).toThrow(/empty/);
  });

  it("survives a real sh unchanged for hostile values (quotes, $(), backticks, newlines, spaces)", async () => {
    expect(await throughShell(HOSTILE)).toEqual(HOSTILE);
  });

  it("survives a real sh unchanged for arbitrary strings", async () => {
    const samples = fc.sample(
      fc.string({ unit: "binary", maxLength: 40 }).filter((s) => !s.includes("\0")),
      { numRuns: 300, seed: 42 },
    );
    expect(await throughShell(samples)).toEqual(samples);
  });

  it("keeps a hostile argument one argument", async () => {
    const r = await local.exec([
      "sh",
      "-c",
      shellJoin(["sh", "-c", 'printf "%s|" "$@"', "sh", "a b", "$(id)", "'", ""]),
    ]);
    expect(r.stdout).toBe("a b|$(id)|'||");
  });
});
