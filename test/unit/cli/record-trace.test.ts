/**
 * `shardctl record --trace`: a bad line is named by its line number, whatever
 * is wrong with it (key or timestamp), and options a trace would silently
 * ignore (--op, --zone, --count) are refused; either way nothing is recorded.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cli } from "../../helpers/cli.js";

let dir: string;
let env: NodeJS.ProcessEnv;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-trace-"));
  env = { SHARDCTL_DATA_DIR: join(dir, "data"), SHARDCTL_CONFIG: join(dir, "shardctl.yaml") };
  writeFileSync(join(dir, "shardctl.yaml"), "segments: 1024\n");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const windowsFile = () => join(dir, "data/access-windows.bin");
const trace = (body: string) => {
  const f = join(dir, "t.csv");
  writeFileSync(f, `timestamp,key,op,zone\n${body}`);
  return f;
};

describe("record --trace", () => {
  it("names the line of a bad key or an unusable timestamp, exit 2, recording nothing", async () => {
    for (const [body, line, why] of [
      ["1,a,read\n2,,write,b\n3,c,read\n", 3, /the key is empty/],
      ["1,a,read\n2,b,read\n3,x\ud800y,write\n", 4, /UTF-8/],
      ["1,a,read\n9999999999999999999,b,write\n", 3, /bad timestamp/],
    ] as const) {
      const r = await cli(["record", "--trace", trace(body)], env);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(new RegExp(`error: trace line ${line}: `));
      expect(r.err).toMatch(why);
      expect(existsSync(windowsFile())).toBe(false);
    }
  });

  it("refuses --op, --zone and --count, which a trace would ignore, recording nothing", async () => {
    const f = trace("1,a,read\n2,b,read,c\n");
    for (const extra of [
      ["--zone", "b"],
      ["--op", "write"],
      ["--count", "7"],
    ]) {
      const r = await cli(["record", "--trace", f, ...extra], env);
      expect(r.code, extra.join(" ")).toBe(2);
      expect(r.err).toMatch(new RegExp(`${extra[0]} cannot be given with --trace`));
      expect(existsSync(windowsFile())).toBe(false);
    }
    const ok = await cli(["record", "--trace", f, "--json"], env);
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(ok.out)).toEqual({ events: 2, segments: 2 });
  });
});
