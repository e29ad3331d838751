/**
 * writeAtomic / writeOutputFile / checkOutputPath / ensureDataDir, and `get --out` on top of
 * them: a path the user got wrong is a UsageError naming it, a failed write leaves neither a
 * temporary nor a partial file, and get's --json describes what was written.
 */
import { execFileSync } from "node:child_process";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, expect, it, vi } from "vitest";
import { writeValueFile } from "../../../src/commands/kv.js";
import { defaultConfig } from "../../../src/config.js";
import { initialLayout } from "../../../src/engine/location-map.js";
import { ExitCode, UsageError, UserError } from "../../../src/errors.js";
import {
  checkOutputPath,
  EmbeddedStore,
  ensureDataDir,
  writeAtomic,
  writeOutputFile,
} from "../../../src/store/embedded.js";
import { updateWindows } from "../../../src/store/windows-file.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

// lets a test make the write itself fail (a full disk), which no path can provoke
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

const newDir = tempDirs("shardctl-outfile-");

/** What a failure must leave: exactly the entries there were before. */
function expectUnchanged(dir: string, before: string[]) {
  expect(readdirSync(dir).sort()).toEqual(before.sort());
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

describe("writeAtomic", () => {
  it("writes the content, and replaces an existing file", () => {
    const d = newDir();
    writeAtomic(join(d, "f"), "one");
    writeAtomic(join(d, "f"), new Uint8Array([116, 119, 111]));
    expect(readFileSync(join(d, "f"), "utf8")).toBe("two");
    expectUnchanged(d, ["f"]);
  });

  it("never writes through what is at its temporary file's name (a planted link, a stale file)", () => {
    // the name is predictable (the file's and the pid): in a shared directory another user could
    // link it to a file of theirs choosing, which the write then replaced
    const d = newDir();
    writeFileSync(join(d, "victim"), "precious");
    symlinkSync(join(d, "victim"), join(d, `plan.json.tmp-${process.pid}`));
    writeAtomic(join(d, "plan.json"), "the plan");
    expect(readFileSync(join(d, "victim"), "utf8")).toBe("precious");
    expect(readFileSync(join(d, "plan.json"), "utf8")).toBe("the plan");
    expect(lstatSync(join(d, "plan.json")).isSymbolicLink()).toBe(false);
    // a temporary file a crashed process of the same pid left is replaced, not appended to
    writeFileSync(join(d, `plan.json.tmp-${process.pid}`), "left over, and longer than the plan");
    writeAtomic(join(d, "plan.json"), "again");
    expect(readFileSync(join(d, "plan.json"), "utf8")).toBe("again");
    expectUnchanged(d, ["victim", "plan.json"]);
  });

  it("removes its temporary file when the rename fails (the target is a directory)", () => {
    const d = newDir();
    mkdirSync(join(d, "out"));
    expect(() => writeAtomic(join(d, "out"), "x")).toThrow(/EISDIR|ENOTEMPTY|EEXIST/);
    expectUnchanged(d, ["out"]);
    expect(readdirSync(join(d, "out"))).toEqual([]);
  });

  it("removes its temporary file when the write fails, and keeps the old file", () => {
    const d = newDir();
    writeFileSync(join(d, "f"), "old");
    failWrites.on = true;
    try {
      expect(() => writeAtomic(join(d, "f"), "new")).toThrow(/ENOSPC/);
    } finally {
      failWrites.on = false;
    }
    expectUnchanged(d, ["f"]);
    expect(readFileSync(join(d, "f"), "utf8")).toBe("old");
  });

  it("creates nothing when the parent directory is missing", () => {
    const d = newDir();
    expect(() => writeAtomic(join(d, "nodir", "x.json"), "x")).toThrow(/ENOENT/);
    expectUnchanged(d, []);
  });
});

describe("checkOutputPath / writeOutputFile", () => {
  const hostile: [string, (d: string) => string, RegExp][] = [
    ["a directory", (d) => (mkdirSync(join(d, "somedir")), join(d, "somedir")), /is a directory/],
    [
      "a directory with a trailing /",
      (d) => (mkdirSync(join(d, "somedir")), join(d, "somedir") + "/"),
      /is a directory/,
    ],
    ["a new name ending in /", (d) => join(d, "newdir") + "/", /names a directory/],
    [
      "a path whose parent is missing",
      (d) => join(d, "nodir", "x.json"),
      /the directory .*nodir does not exist/,
    ],
    [
      "a path under a file",
      (d) => (writeFileSync(join(d, "afile"), "keep"), join(d, "afile", "x.json")),
      /afile is not a directory/,
    ],
    [
      // the atomic rename would replace the pipe (or, as root, /dev/null) with a regular file
      "a named pipe",
      (d) => (execFileSync("mkfifo", [join(d, "pipe")]), join(d, "pipe")),
      /is a pipe, not a regular file/,
    ],
  ];
  for (const [what, make, message] of hostile) {
    it(`refuses ${what} with a UsageError naming it, writing nothing`, () => {
      const d = newDir();
      const out = make(d);
      const before = readdirSync(d);
      for (const attempt of [() => checkOutputPath(out), () => writeOutputFile(out, "content")]) {
        const err = thrown(attempt);
        expect(err).toBeInstanceOf(UsageError);
        expect((err as UsageError).exitCode).toBe(ExitCode.Usage);
        expect((err as Error).message).toContain(`--out ${out}`);
        expect((err as Error).message).toMatch(message);
      }
      expectUnchanged(d, before);
      if (what === "a named pipe") expect(statSync(out).isFIFO()).toBe(true);
    });
  }

  it("refuses a directory where no file can be created, even for root (sysfs)", () => {
    // permission bits do not stop root; sysfs refuses to create any regular file, for everyone
    const err = thrown(() => writeOutputFile("/sys/shardctl-out-test.json", "x"));
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/shardctl-out-test\.json/);
    expect(readdirSync("/sys").filter((f) => f.startsWith("shardctl-out-test"))).toEqual([]);
  });

  it("turns a failed write into a plain error (exit 1), keeping the old file and no temporary", () => {
    const d = newDir();
    writeFileSync(join(d, "plan.json"), "old");
    failWrites.on = true;
    let err: unknown;
    try {
      err = thrown(() => writeOutputFile(join(d, "plan.json"), "new"));
    } finally {
      failWrites.on = false;
    }
    expect(err).toBeInstanceOf(UserError);
    expect(err).not.toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/cannot write --out .*plan\.json: ENOSPC/);
    expectUnchanged(d, ["plan.json"]);
    expect(readFileSync(join(d, "plan.json"), "utf8")).toBe("old");
  });

  it("writes through a symbolic link to the file it points to, and the link stays a link", () => {
    // Given a link in one directory to a file in another, through a relative link and a second hop
    const d = newDir();
    mkdirSync(join(d, "real"));
    writeFileSync(join(d, "real", "plan.json"), "old");
    symlinkSync("real/plan.json", join(d, "hop"));
    symlinkSync(join(d, "hop"), join(d, "link"));
    // When --out names the link
    checkOutputPath(join(d, "link"));
    writeOutputFile(join(d, "link"), "new");
    // Then the target has the content, both links are as they were, and no temporary is left
    expect(readFileSync(join(d, "real", "plan.json"), "utf8")).toBe("new");
    expect(lstatSync(join(d, "link")).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(d, "link"))).toBe(join(d, "hop"));
    expect(readlinkSync(join(d, "hop"))).toBe("real/plan.json");
    expectUnchanged(d, ["real", "hop", "link"]);
    expectUnchanged(join(d, "real"), ["plan.json"]);
  });

  it("writes the target of a dangling link when its directory exists, and refuses it when not", () => {
    const d = newDir();
    mkdirSync(join(d, "real"));
    symlinkSync("real/new.json", join(d, "link"));
    writeOutputFile(join(d, "link"), "first");
    expect(readFileSync(join(d, "real", "new.json"), "utf8")).toBe("first");
    expect(lstatSync(join(d, "link")).isSymbolicLink()).toBe(true);

    symlinkSync("nodir/new.json", join(d, "nowhere"));
    for (const attempt of [
      () => checkOutputPath(join(d, "nowhere")),
      () => writeOutputFile(join(d, "nowhere"), "x"),
    ]) {
      const err = thrown(attempt);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(/nodir does not exist/);
    }
    expectUnchanged(d, ["real", "link", "nowhere"]);
  });

  it("refuses a link to a named pipe or a directory as it refuses the path itself, leaving the link", () => {
    const d = newDir();
    execFileSync("mkfifo", [join(d, "pipe")]);
    mkdirSync(join(d, "somedir"));
    symlinkSync("pipe", join(d, "to-pipe"));
    symlinkSync("somedir", join(d, "to-dir"));
    for (const [link, why] of [
      ["to-pipe", /is a pipe, not a regular file/],
      ["to-dir", /is a directory/],
    ] as const) {
      for (const attempt of [
        () => checkOutputPath(join(d, link)),
        () => writeOutputFile(join(d, link), "x"),
      ]) {
        const err = thrown(attempt);
        expect(err).toBeInstanceOf(UsageError);
        expect((err as Error).message).toContain(`--out ${join(d, link)}`);
        expect((err as Error).message).toMatch(why);
      }
      expect(lstatSync(join(d, link)).isSymbolicLink()).toBe(true);
    }
    expect(statSync(join(d, "pipe")).isFIFO()).toBe(true);
    expectUnchanged(d, ["pipe", "somedir", "to-pipe", "to-dir"]);
    expect(readdirSync(join(d, "somedir"))).toEqual([]);
  });

  it("refuses a link to /dev/null (a device), leaving the link and /dev/null as they are", () => {
    const d = newDir();
    symlinkSync("/dev/null", join(d, "null"));
    for (const attempt of [
      () => checkOutputPath(join(d, "null")),
      () => writeOutputFile(join(d, "null"), "x"),
    ]) {
      const err = thrown(attempt);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(/is a device, not a regular file/);
    }
    expect(lstatSync(join(d, "null")).isSymbolicLink()).toBe(true);
    expect(statSync("/dev/null").isCharacterDevice()).toBe(true);
    expectUnchanged(d, ["null"]);
  });

  it("refuses a link loop with a UsageError (exit 2), writing nothing", () => {
    const d = newDir();
    symlinkSync("b", join(d, "a"));
    symlinkSync("a", join(d, "b"));
    symlinkSync("self", join(d, "self"));
    for (const link of ["a", "self"]) {
      for (const attempt of [
        () => checkOutputPath(join(d, link)),
        () => writeOutputFile(join(d, link), "x"),
      ]) {
        const err = thrown(attempt);
        expect(err).toBeInstanceOf(UsageError);
        expect((err as UsageError).exitCode).toBe(ExitCode.Usage);
        expect((err as Error).message).toContain(`--out ${join(d, link)}`);
        expect((err as Error).message).toMatch(/symbolic link loop/);
      }
    }
    expectUnchanged(d, ["a", "b", "self"]);
    expect(readlinkSync(join(d, "a"))).toBe("b");
  });

  it("names the flag it is given", () => {
    const d = newDir();
    expect(() => checkOutputPath(d, "-o")).toThrow(`-o ${d}: is a directory`);
  });
});

describe("the data directory", () => {
  const expectNotADirectory = (err: unknown, dir: string) => {
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toContain(`the data directory ${dir} is not a directory`);
  };

  it("ensureDataDir creates a missing directory and accepts an existing one", () => {
    const d = newDir();
    ensureDataDir(join(d, "a", "b"));
    ensureDataDir(join(d, "a", "b"));
    expect(readdirSync(join(d, "a"))).toEqual(["b"]);
  });

  it("ensureDataDir makes the directories it creates 0700 whatever the umask (the map and the token live there)", () => {
    const d = newDir();
    const before = process.umask(0);
    try {
      ensureDataDir(join(d, "open", "store"));
    } finally {
      process.umask(before);
    }
    // before: 0777 under umask 000, and another user could swap the map for one of theirs
    expect(statSync(join(d, "open")).mode & 0o777).toBe(0o700);
    expect(statSync(join(d, "open", "store")).mode & 0o777).toBe(0o700);
  });

  it("ensureDataDir refuses a file, and a path under a file, naming the file", () => {
    const d = newDir();
    const file = join(d, "afile");
    writeFileSync(file, "keep");
    expectNotADirectory(
      thrown(() => ensureDataDir(file)),
      file,
    );
    const under = thrown(() => ensureDataDir(join(file, "x")));
    expectNotADirectory(under, join(file, "x"));
    expect((under as Error).message).toContain(`(${file} is a file)`);
    expect(readFileSync(file, "utf8")).toBe("keep");
  });

  it("the embedded store and the windows file refuse a data directory that is a file", async () => {
    const d = newDir();
    const file = join(d, "afile");
    writeFileSync(file, "keep");
    const store = new EmbeddedStore(file);
    const map = initialLayout(16, [{ id: "n1", address: "127.0.0.1:1", zone: "a" }], { now: 0 });
    await expect(store.compareAndSet(0, map)).rejects.toThrow(/the data directory .* is not a directory/);
    // the directory is checked before the record is looked at
    await expect(store.putMigration({ record: {} as never, expectRev: 0 })).rejects.toBeInstanceOf(
      UsageError,
    );
    for (const dir of [file, join(file, "x")]) {
      const config = { ...defaultConfig(), dataDir: dir };
      await expect(updateWindows(config, () => undefined)).rejects.toBeInstanceOf(UsageError);
    }
    expectUnchanged(d, ["afile"]);
    expect(readFileSync(file, "utf8")).toBe("keep");
  });

  it("the embedded store and the windows file refuse a data directory no file can be written in (sysfs, even for root)", async () => {
    const store = new EmbeddedStore("/sys");
    const map = initialLayout(16, [{ id: "n1", address: "127.0.0.1:1", zone: "a" }], { now: 0 });
    await expect(store.compareAndSet(0, map)).rejects.toThrow(/cannot write in the data directory \/sys/);
    const config = { ...defaultConfig(), dataDir: "/sys" };
    await expect(updateWindows(config, () => undefined)).rejects.toBeInstanceOf(UsageError);
  });
});

/** get --out: the value and how a get answered it. */
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
