/**
 * An agent token that cannot go into an HTTP header (whitespace or a control
 * character inside, a non-ASCII letter, nothing at all) is refused where it is
 * read, with exit 2, before any request: it used to fail every request as if
 * the agents were down, after ten seconds of retries, and a put then said its
 * write "may have been applied".
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkAgentToken } from "../../../src/cluster/local.js";
import { cli } from "../../helpers/cli.js";

let dir: string;
let env: NodeJS.ProcessEnv;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-token-"));
  env = { SHARDCTL_DATA_DIR: join(dir, "data"), HOME: dir };
  // a layout whose nodes listen nowhere: a request that went out would be retried until it gave up
  const nodes = "n1=127.0.0.1:1@a,n2=127.0.0.1:1@b,n3=127.0.0.1:1@c";
  expect((await cli(["init", "--nodes", nodes], env)).code).toBe(0);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("checkAgentToken", () => {
  it("takes one word of printable ASCII", () => {
    expect(checkAgentToken("3f2a9c1e6b7d4e8f", "t")).toBe("3f2a9c1e6b7d4e8f");
    expect(checkAgentToken("a.b-c_d~e+f/g=", "t")).toBe("a.b-c_d~e+f/g=");
  });

  it.each([
    ["", /t is empty/],
    ["a\nb", /t holds whitespace/],
    ["a b", /t holds whitespace/],
    ["a\tb", /t holds whitespace/],
    ["a\u0000b", /U\+0000/],
    ["a\u007fb", /U\+007F/],
    ["tök", /U\+00F6/],
    ["a\u2028b", /whitespace|U\+2028/],
  ])("refuses %j", (token, message) => {
    expect(() => checkAgentToken(token, "t")).toThrow(message);
  });
});

describe("a bad agent token on the command line", () => {
  it("SHARDCTL_TOKEN with a newline inside: get and put exit 2 at once, and put says nothing was sent", async () => {
    const bad = { ...env, SHARDCTL_TOKEN: "abc\ndef" };
    const t0 = Date.now();
    const get = await cli(["get", "hello"], bad);
    expect(get.code).toBe(2);
    expect(get.err).toMatch(/agent token \(agent\.token or SHARDCTL_TOKEN\) holds whitespace/);
    const put = await cli(["put", "hello", "world"], bad);
    expect(put.code).toBe(2);
    expect(put.err).not.toMatch(/may have been applied/);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it("the local cluster's token file: a control character or nothing in it is exit 2 naming the file", async () => {
    mkdirSync(join(dir, "data", "local"), { recursive: true });
    const file = join(dir, "data", "local", "token");
    writeFileSync(file, "abc\u0001def\n");
    let r = await cli(["get", "hello"], env);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`the token file ${file} holds the character U+0001`);
    writeFileSync(file, "\n");
    r = await cli(["delete", "hello"], env);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`the token file ${file} is empty`);
  });

  it("agent.token in the config file", async () => {
    writeFileSync(join(dir, "config.yaml"), 'agent:\n  token: "two words"\n');
    const r = await cli(["--config", join(dir, "config.yaml"), "get", "hello"], env);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/holds whitespace; an agent token is one word/);
  });

  it("the agent refuses to start with such a token (--token-file or SHARDCTL_TOKEN)", async () => {
    const file = join(dir, "agent-token");
    writeFileSync(file, "secret with spaces\n");
    const args = [
      "agent",
      "--data-dir",
      join(dir, "agent"),
      "--listen",
      "127.0.0.1:0",
      "--zone",
      "a",
      "--node-id",
      "n1",
    ];
    let r = await cli([...args, "--token-file", file], env);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`the token file ${file} holds whitespace`);
    r = await cli(args, { ...env, SHARDCTL_TOKEN: "caf\u00e9" });
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/U\+00E9/);
  });

  it("the agent reads a token file with a bound: /dev/zero, a directory or a huge file is refused, nothing started", async () => {
    const args = ["agent", "--data-dir", join(dir, "agent"), "--listen", "127.0.0.1:0", "--zone", "a"];
    const huge = join(dir, "huge-token");
    writeFileSync(huge, "x".repeat(70 * 1024));
    // before: /dev/zero was read until memory ran out (9.5 GB in a minute), never exiting
    for (const [file, why] of [
      ["/dev/zero", "is larger than 64 KiB: it does not hold a bearer token"],
      [huge, "is larger than 64 KiB: it does not hold a bearer token"],
      [dir, "is a directory"],
      [join(dir, "missing"), ": it does not exist"],
    ]) {
      const r = await cli([...args, "--node-id", "n1", "--token-file", file], env);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toContain(`the token file ${file}${why.startsWith(":") ? "" : " "}${why}`);
    }
    expect(existsSync(join(dir, "agent"))).toBe(false);
  });
});
