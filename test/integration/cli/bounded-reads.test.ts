/**
 * The built CLI on files it reads that a user (or a mistake) points elsewhere: /dev/zero, a
 * directory, a file far too large, a damaged state file. Each is refused at once, naming the
 * file (or the variable that names it), with no stack and nothing changed: never a read that
 * does not end.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { expectRefused } from "../../helpers/hostile-paths.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-bounded-");
let dir: string;
const env = (more: NodeJS.ProcessEnv = {}) => ({
  SHARDCTL_DATA_DIR: join(dir, "data"),
  SHARDCTL_SEGMENTS: "64",
  ...more,
});
/** A read that never ends is killed here and shows as a failure, not as a hung test. */
const timeoutMs = 20_000;

beforeEach(() => {
  dir = newDir();
  mkdirSync(join(dir, "somedir"));
  writeFileSync(join(dir, "afile"), "keep me");
});

describe("CONSUL_HTTP_TOKEN_FILE", () => {
  for (const [what, file, why] of [
    ["/dev/zero", "/dev/zero", "is larger than 64 KiB"],
    ["a directory", "somedir", "is a directory"],
  ] as const) {
    it(`${what}: any command that loads the config exits 2 naming the variable`, () => {
      const r = expectRefused(dir, ["status"], `CONSUL_HTTP_TOKEN_FILE ${file} ${why}`, {
        env: env({ CONSUL_HTTP_TOKEN_FILE: file }),
        timeoutMs,
      });
      expect(r.stderr).toMatch(/^hint: .*CONSUL_HTTP_TOKEN/m);
    });
  }
});

describe("deploy --inventory", () => {
  // named as resolved: the inventory's directory is where relative key files are found
  for (const [what, file, naming] of [
    ["/dev/zero", "/dev/zero", () => "the inventory /dev/zero is larger than 1 MiB"],
    ["a directory", "somedir", () => `the inventory ${join(dir, "somedir")} is a directory`],
  ] as const) {
    it(`${what}: exit 2 naming the inventory, before anything else`, () => {
      expectRefused(dir, ["deploy", "--inventory", file], naming(), {
        env: env({ SHARDCTL_TOKEN: "t0k" }),
        timeoutMs,
      });
    });
  }
});
