/**
 * `get --out`: the value is written atomically, a bad path is a UsageError naming it with
 * nothing left behind, and --json describes what was written instead of printing nothing.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, expect, it, vi } from "vitest";
import { writeValueFile } from "../../../src/commands/kv.js";
import { UsageError, UserError } from "../../../src/errors.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

// lets a test make the write itself fail half-way (a full disk), which no path can provoke
const failWrites = vi.hoisted(() => ({ on: false }));
vi.mock("node:fs", async (importOriginal) => {
  const fs = await importOriginal<typeof import("node:fs")>();
  const writeSync = ((...args: Parameters<typeof fs.writeSync>) => {
    if (failWrites.on)
      throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    return (fs.writeSync as (...a: unknown[]) => number)(...args);
  }) as typeof fs.writeSync;
  return { ...fs, default: { ...fs, writeSync }, writeSync };
});

const newDir = tempDirs("shardctl-getout-");
const value = { value: Buffer.from([0, 255, 1, 254]), lsn: 7, timestamp: 1_700_000_000_000 };

function fakeIO() {
  const sink = () => {
    const w = new Writable({ write: (c, _e, cb) => ((w.text += String(c)), cb()) }) as Writable & {
      text: string;
    };
    w.text = "";
    return w;
  };
  return { out: sink(), err: sink() };
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

describe("get --out", () => {
  it("writes the bytes and says so on stderr; stdout stays empty", () => {
    const d = newDir();
    const io = fakeIO();
    writeValueFile("blob", value, join(d, "o.bin"), false, io);
    expect(readFileSync(join(d, "o.bin"))).toEqual(value.value);
    expect(io.out.text).toBe("");
    expect(io.err.text).toBe(`wrote 4 bytes to ${join(d, "o.bin")}\n`);
    expect(readdirSync(d)).toEqual(["o.bin"]);
  });

  it("with --json, prints what was written, in the fields of get --json", () => {
    const d = newDir();
    const io = fakeIO();
    writeValueFile("blob", value, join(d, "o.bin"), true, io);
    expect(JSON.parse(io.out.text)).toEqual({
      key: "blob",
      out: join(d, "o.bin"),
      bytes: 4,
      lsn: 7,
      timestamp: 1_700_000_000_000,
    });
    expect(io.err.text).toBe("");
  });

  const hostile: [string, (d: string) => string][] = [
    ["a directory", (d) => (mkdirSync(join(d, "somedir")), join(d, "somedir"))],
    ["a path whose parent is missing", (d) => join(d, "nodir", "o.bin")],
    ["a path under a file", (d) => (writeFileSync(join(d, "afile"), "keep"), join(d, "afile", "o.bin"))],
  ];
  for (const [what, make] of hostile) {
    it(`refuses ${what} with a UsageError naming it, leaving nothing behind`, () => {
      const d = newDir();
      const out = make(d);
      const before = readdirSync(d).sort();
      const io = fakeIO();
      const err = thrown(() => writeValueFile("blob", value, out, true, io));
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toContain(`--out ${out}`);
      expect(io.out.text).toBe("");
      expect(readdirSync(d).sort()).toEqual(before);
    });
  }

  it("a write that fails half-way leaves the old file whole and no partial or temporary file", () => {
    const d = newDir();
    writeFileSync(join(d, "o.bin"), "old");
    failWrites.on = true;
    let err: unknown;
    try {
      err = thrown(() => writeValueFile("blob", value, join(d, "o.bin"), false, fakeIO()));
    } finally {
      failWrites.on = false;
    }
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(/cannot write --out .*o\.bin: ENOSPC/);
    expect(readdirSync(d)).toEqual(["o.bin"]);
    expect(readFileSync(join(d, "o.bin"), "utf8")).toBe("old");
  });
});
