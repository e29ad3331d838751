/** The shard log on a temporary directory: the space it writes ahead, and recovery with it. */
import {
  closeSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirs } from "../../helpers/temp-dirs.js";
import { decodeEntry, encodeEntry, type LogEntry } from "../../../src/agent/log-format.js";
import {
  LogCorrupt,
  ShardLog,
  listLogFiles,
  logFileName,
  writevAsync,
  type ShardLogOptions,
} from "../../../src/agent/shard-log.js";

const tempDir = tempDirs("shardctl-log-");

/** Options with a clock the test moves, and the warnings collected. */
function options(over: Partial<ShardLogOptions> = {}) {
  const warnings: string[] = [];
  const clock = { ms: 0 };
  const opts: ShardLogOptions = {
    maxFileBytes: 64 * 1024 * 1024,
    warn: (m) => warnings.push(m),
    applyDurable: () => {},
    clock: () => clock.ms,
    ...over,
  };
  return { opts, warnings, clock };
}

function recover(dir: string, opts: ShardLogOptions): { log: ShardLog; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const log = ShardLog.recover(dir, 0, (e) => entries.push(e), opts);
  return { log, entries };
}

/** Appends `n` puts of `valueBytes` each, one batch per entry, all at once (they share group commits). */
async function appendPuts(log: ShardLog, n: number, valueBytes: number): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, (_, i) => {
      const lsn = log.reserve(1);
      const buf = encodeEntry({
        lsn,
        timestamp: 1,
        migrationTimestamp: 0,
        op: "put",
        shardId: "shard-1",
        key: `k${lsn}`,
        value: Buffer.alloc(valueBytes, i & 0xff),
      });
      return log.append({ buffers: [buf], bytes: buf.length, firstLsn: lsn });
    }),
  );
}

/** A log written at 1 MiB/s for a second: its next write that extends the file writes 64 KiB of zeros after it. */
async function fastLog(dir: string, o = options()) {
  const { log } = recover(dir, o.opts);
  await appendPuts(log, 256, 4000); // ~1 MiB
  o.clock.ms = 1000;
  await appendPuts(log, 1, 100); // the rate is measured
  await appendPuts(log, 1, 100); // this one extends the file: zeros after it
  return { log, ...o };
}

const physical = (dir: string) => listLogFiles(dir).map((f) => statSync(f.path).size);

describe("ShardLog: space written ahead", () => {
  it("writes nothing ahead for a log written slowly", async () => {
    const dir = tempDir();
    const o = options();
    const { log } = recover(dir, o.opts);
    await appendPuts(log, 10, 100);
    o.clock.ms = 1000;
    await appendPuts(log, 10, 100);
    expect(log.zerosAhead).toBe(0);
    expect(physical(dir)).toEqual([log.totalBytes]);
    await log.close();
  });

  it("writes zeros after a fast log's entries when it extends the file, and writes the next entries over them", async () => {
    const dir = tempDir();
    const { log } = await fastLog(dir);
    const ahead = log.zerosAhead;
    expect(ahead).toBeGreaterThanOrEqual(64 * 1024);
    expect(ahead).toBeLessThan(68 * 1024);
    expect((log.totalBytes + ahead) % 4096).toBe(0);
    const [size] = physical(dir);
    expect(size).toBe(log.totalBytes + ahead);
    expect(
      readFileSync(listLogFiles(dir)[0].path)
        .subarray(log.totalBytes)
        .every((b) => b === 0),
    ).toBe(true);
    // the next writes land in the zeros: the file does not grow
    const before = log.totalBytes;
    await appendPuts(log, 10, 1000);
    expect(log.totalBytes).toBeGreaterThan(before);
    expect(physical(dir)).toEqual([size]);
    await log.close();
  });

  it("trims the zeros when it closes: a cleanly stopped log holds its entries only", async () => {
    const dir = tempDir();
    const { log } = await fastLog(dir);
    expect(log.zerosAhead).toBeGreaterThan(0);
    const total = log.totalBytes;
    await log.close();
    expect(physical(dir)).toEqual([total]);
    const o = options();
    const { entries } = recover(dir, o.opts);
    expect(entries).toHaveLength(258);
    expect(o.warnings).toEqual([]);
  });

  it("after a crash, recovers every entry and trims the zeros, saying so (not as a torn write)", async () => {
    const dir = tempDir();
    const { log } = await fastLog(dir);
    const ahead = log.zerosAhead;
    const total = log.totalBytes;
    // a crash: the log is never closed; a second process recovers the directory
    const o = options();
    const { log: again, entries } = recover(dir, o.opts);
    expect(entries.map((e) => e.lsn)).toEqual(Array.from({ length: 258 }, (_, i) => i + 1));
    expect(o.warnings).toHaveLength(1);
    expect(o.warnings[0]).toContain(`${ahead} bytes of zeros after the last entry (LSN 258)`);
    expect(o.warnings[0]).not.toContain("torn");
    expect(physical(dir)).toEqual([total]);
    await appendPuts(again, 3, 10);
    expect(again.durableLsn).toBe(261);
    await again.close();
    await log.close();
  });

  it("still reports a torn entry written into the zeros, and keeps every entry before it", async () => {
    const dir = tempDir();
    const { log } = await fastLog(dir);
    expect(log.zerosAhead).toBeGreaterThan(0); // the torn entry lands in them
    const total = log.totalBytes;
    const path = listLogFiles(dir)[0].path;
    // half an entry landed in the zeros before the crash
    const torn = encodeEntry({
      lsn: 259,
      timestamp: 1,
      migrationTimestamp: 0,
      op: "put",
      shardId: "shard-1",
      key: "torn",
      value: Buffer.alloc(500, 9),
    }).subarray(0, 200);
    const bytes = readFileSync(path);
    torn.copy(bytes, total);
    writeFileSync(path, bytes);
    const o = options();
    const { log: again, entries } = recover(dir, o.opts);
    expect(entries).toHaveLength(258);
    expect(o.warnings).toHaveLength(1);
    expect(o.warnings[0]).toContain("torn tail");
    expect(physical(dir)).toEqual([total]);
    await again.close();
    await log.close();
  });

  it("trims a sealed file when the next one starts, and never writes ahead past the file size limit", async () => {
    const dir = tempDir();
    const max = 1536 * 1024;
    const { log } = await fastLog(dir, options({ maxFileBytes: max }));
    expect(log.zerosAhead).toBeLessThanOrEqual(max - log.totalBytes);
    expect(physical(dir)[0]).toBeLessThanOrEqual(max);
    await appendPuts(log, 200, 4000); // past the limit: a new file
    const files = listLogFiles(dir);
    expect(files.length).toBeGreaterThan(1);
    const sealed = files.slice(0, -1);
    for (const f of sealed)
      expect(statSync(f.path).size, f.path).toBe(log.files.find((x) => x.path === f.path)!.size);
    await log.close();
    const o = options({ maxFileBytes: max });
    const { entries } = recover(dir, o.opts);
    expect(entries).toHaveLength(458);
    expect(o.warnings).toEqual([]);
  });

  it("accepts zeros at the end of a sealed file, but not zeros that hid entries the next file lacks", async () => {
    const dir = tempDir();
    const max = 1536 * 1024;
    const { log } = await fastLog(dir, options({ maxFileBytes: max }));
    await appendPuts(log, 200, 4000);
    await log.close();
    const [first, second] = listLogFiles(dir);
    const firstSize = statSync(first.path).size;
    // zeros after the sealed file's entries (a trim that a crash undid)
    truncateSync(first.path, firstSize + 8192);
    const o = options({ maxFileBytes: max });
    expect(recover(dir, o.opts).entries).toHaveLength(458);
    expect(o.warnings).toHaveLength(1);
    expect(o.warnings[0]).toContain("bytes of zeros after the last entry");
    expect(statSync(first.path).size).toBe(firstSize);
    // zeros over the sealed file's last entries: the next file's first LSN no longer follows
    const bytes = readFileSync(first.path);
    // from the start of an entry some way before the end
    let at = 0;
    for (
      let r = decodeEntry(bytes, 0);
      r.kind === "entry" && at < firstSize - 10_000;
      r = decodeEntry(bytes, at)
    )
      at += r.length;
    bytes.fill(0, at);
    writeFileSync(first.path, bytes);
    const refused = options({ maxFileBytes: max });
    expect(() => recover(dir, refused.opts)).toThrow(LogCorrupt);
    expect(() => recover(dir, refused.opts)).toThrow(`${second.path} starts at LSN ${second.firstLsn}`);
    // refused: nothing trimmed, nothing said
    expect(readFileSync(first.path).equals(bytes)).toBe(true);
    expect(refused.warnings).toEqual([]);
  });

  describe("on a disk with room for the entries and not for the zeros", () => {
    /** fs.writev on a disk that ends at `limit()`: a write past it is refused (ENOSPC) or cut short there. */
    function fullDisk(limit: () => number, mode: "refuse" | "short") {
      const calls: number[] = [];
      const fn = (fd: number, buffers: Buffer[], position: number): Promise<number> => {
        let want = 0;
        for (const b of buffers) want += b.length;
        calls.push(want);
        const room = limit() - position;
        if (want > room && (mode === "refuse" || room <= 0)) {
          return Promise.reject(
            Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" }),
          );
        }
        let keep = Math.min(want, room);
        const cut: Buffer[] = [];
        for (const b of buffers) {
          if (keep <= 0) break;
          cut.push(b.subarray(0, Math.min(b.length, keep)));
          keep -= b.length;
        }
        return writevAsync(fd, cut, position);
      };
      return { fn, calls };
    }

    for (const mode of ["refuse", "short"] as const) {
      it(`takes every entry when the zeros are ${mode === "refuse" ? "refused" : "cut short"}, and goes on`, async () => {
        const dir = tempDir();
        let limit = Infinity;
        const disk = fullDisk(() => limit, mode);
        const o = options({ writev: disk.fn });
        const { log } = recover(dir, o.opts);
        await appendPuts(log, 256, 4000);
        o.clock.ms = 1000;
        await appendPuts(log, 1, 100); // the rate is measured: the next extension carries zeros
        limit = log.totalBytes + 20_000; // room for a few entries, not for 64 KiB of zeros
        disk.calls.length = 0;
        await appendPuts(log, 3, 4000);
        expect(disk.calls[0]).toBeGreaterThan(64 * 1024); // the zeros were tried
        expect(log.durableLsn).toBe(260);
        expect(log.zerosAhead).toBe(mode === "refuse" ? 0 : limit - log.totalBytes);
        const onDisk = statSync(listLogFiles(dir)[0].path).size;
        expect(onDisk).toBe(mode === "refuse" ? log.totalBytes : limit);
        // and the log goes on while there is room
        await appendPuts(log, 1, 100);
        expect(log.durableLsn).toBe(261);
        await log.close();
        const again = options();
        expect(recover(dir, again.opts).entries).toHaveLength(261);
      });
    }

    it("fails the log on any other error, as before", async () => {
      const dir = tempDir();
      let fail = false;
      const o = options({
        writev: (fd, buffers, position) =>
          fail
            ? Promise.reject(Object.assign(new Error("EIO: i/o error"), { code: "EIO" }))
            : writevAsync(fd, buffers, position),
      });
      const { log } = recover(dir, o.opts);
      await appendPuts(log, 256, 4000);
      o.clock.ms = 1000;
      await appendPuts(log, 1, 100);
      fail = true;
      await expect(appendPuts(log, 1, 100)).rejects.toThrow("EIO");
      fail = false;
      await expect(appendPuts(log, 1, 100)).rejects.toThrow("EIO"); // a failed log stays failed
      expect(log.durableLsn).toBe(257);
    });
  });

  it("keeps its file open when the next file cannot be created, so closing it never touches another file", async () => {
    const dir = tempDir();
    const o = options({ maxFileBytes: 8192 });
    const { log } = recover(dir, o.opts);
    await appendPuts(log, 3, 2000);
    const before = readFileSync(log.files[0].path);
    // the next file's name is taken: the rotation's exclusive create fails
    writeFileSync(join(dir, logFileName(4)), "");
    await expect(appendPuts(log, 1, 8000)).rejects.toThrow("EEXIST");
    // a file opened now may be given any free descriptor, the log's old one included if it was closed
    const other = join(tempDir(), "other");
    writeFileSync(other, "");
    const fd = openSync(other, "r+");
    writeSync(fd, Buffer.alloc(100_000, 7));
    await log.close();
    expect(statSync(other).size).toBe(100_000);
    closeSync(fd);
    expect(readFileSync(log.files[0].path).equals(before)).toBe(true);
    rmSync(join(dir, logFileName(4)));
    const again = options({ maxFileBytes: 8192 });
    const { log: reopened, entries } = recover(dir, again.opts);
    expect(entries.map((e) => e.lsn)).toEqual([1, 2, 3]);
    await reopened.close();
  });
});
