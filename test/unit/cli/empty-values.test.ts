/**
 * An option or environment variable given the empty string was read as not given (`if (opts.x)`):
 * `record foo --zone ''` recorded with no zone, `get k --out ''` printed to stdout, `init --force
 * --nodes ''` built the default layout, SHARDCTL_DATA_DIR= used .shardctl. Each is exit 2 naming it,
 * before anything is done. Every value-taking option of every command is tried.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { describe, expect, it } from "vitest";
import { buildProgram } from "../../../src/cli.js";
import { cli } from "../../helpers/cli.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-empty-");

/** Every command (with its path of names) of the program, subcommands included. */
function allCommands(cmd: Command, path: string[] = []): { path: string[]; cmd: Command }[] {
  return cmd.commands.flatMap((c) => [
    { path: [...path, c.name()], cmd: c },
    ...allCommands(c, [...path, c.name()]),
  ]);
}

const program = buildProgram();
const cases: { args: string[]; flag: string; choices: boolean }[] = [];
for (const { path, cmd } of allCommands(program)) {
  if (cmd.commands.length) continue; // a group: its subcommands are tried
  const args = cmd.registeredArguments.filter((a) => a.required).map(() => "k");
  const mandatory = cmd.options.filter((o) => o.mandatory);
  for (const opt of [...cmd.options, ...program.options]) {
    if (!(opt.required || opt.optional) || !opt.long) continue;
    const others = mandatory.filter((o) => o !== opt).map((o) => `${o.long}=x`);
    cases.push({
      args: [...path, ...args, ...others, `${opt.long}=`],
      flag: opt.long,
      choices: Array.isArray(opt.argChoices),
    });
  }
}

describe("an empty option value", () => {
  it("is tried for many options", () => expect(cases.length).toBeGreaterThan(80));

  it.each(cases.map((c) => [c.args.join(" "), c] as const))("%s: exit 2 naming it", async (_, c) => {
    const d = newDir();
    const r = await cli(c.args, { SHARDCTL_DATA_DIR: join(d, "data"), HOME: d });
    expect(r.err).not.toMatch(/internal error/);
    expect(r.code, r.err).toBe(2);
    expect(r.out).toBe("");
    // an option with fixed choices is refused by commander itself ("" is not one of them)
    expect(r.err).toMatch(
      c.choices ? /is empty|Allowed choices/ : new RegExp(`^error: ${c.flag} is empty$`, "m"),
    );
    expect(readdirSync(d)).toEqual([]);
  });

  it("the cases the audit found", async () => {
    for (const args of [
      ["record", "foo", "--zone", ""],
      ["predict", "--key", "foo", "--zone", ""],
      ["plan", "--all", "--out", ""],
      ["get", "hello", "--out", ""],
      ["init", "--force", "--nodes", ""],
    ]) {
      const d = newDir();
      const r = await cli(args, { SHARDCTL_DATA_DIR: join(d, "data") });
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.err).toMatch(/^error: --(zone|out|nodes) is empty$/m);
      expect(r.out).toBe("");
      expect(readdirSync(d)).toEqual([]);
    }
  });
});

describe("an environment variable set but empty", () => {
  for (const name of [
    "SHARDCTL_SEGMENTS",
    "SHARDCTL_STORE",
    "SHARDCTL_DATA_DIR",
    "SHARDCTL_CONFIG",
    "SHARDCTL_ZONES",
  ]) {
    it(`${name}= is exit 2 naming it, nothing written`, async () => {
      const d = newDir();
      const env: NodeJS.ProcessEnv = { SHARDCTL_DATA_DIR: join(d, "data"), HOME: d, [name]: "" };
      // `shards` only reads: the code before the fix read SHARDCTL_DATA_DIR= as .shardctl in the working directory
      const r = await cli(["shards"], env);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(new RegExp(`^error: ${name} is set but empty$`, "m"));
      expect(readdirSync(d)).toEqual([]);
    });
  }
});
