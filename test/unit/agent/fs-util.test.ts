/** writeFully: a write the kernel cuts short is finished, or fails; it never ends with bytes missing. */
import type { FileHandle } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { writeFully } from "../../../src/agent/fs-util.js";

/** A file that takes at most `perWrite` bytes per write and refuses (EFBIG) bytes at or past `limit`. */
function shortFile(perWrite: number, limit = Infinity) {
  const bytes = Buffer.alloc(256);
  let size = 0;
  const calls: number[] = [];
  const fh = {
    write: async (buf: Uint8Array, off: number, len: number, pos: number) => {
      calls.push(len);
      if (pos >= limit) throw Object.assign(new Error("EFBIG: file too large, write"), { code: "EFBIG" });
      const n = Math.min(len, perWrite, limit - pos);
      Buffer.from(buf.buffer, buf.byteOffset + off, n).copy(bytes, pos);
      size = Math.max(size, pos + n);
      return { bytesWritten: n, buffer: buf };
    },
  } as unknown as FileHandle;
  return { fh, calls, content: () => bytes.subarray(0, size) };
}

describe("writeFully", () => {
  it("writes the rest of a write that was cut short, at the right offsets", async () => {
    const f = shortFile(3);
    const data = Buffer.from("0123456789abcdef");
    await writeFully(f.fh, data, 0);
    await writeFully(f.fh, Buffer.from("XYZW"), data.length);
    expect(f.content().toString()).toBe("0123456789abcdefXYZW");
    expect(f.calls.slice(0, 3)).toEqual([16, 13, 10]);
  });

  it("fails, rather than returning, when the disk takes part of the bytes and refuses the rest", async () => {
    // the last bytes of a snapshot (its checksum) across a file size limit: 2 of 4 bytes taken
    const f = shortFile(1024, 10);
    await expect(writeFully(f.fh, Buffer.from("abcd"), 8)).rejects.toThrow("EFBIG");
    expect(f.content().subarray(8).toString()).toBe("ab");
  });

  it("fails when a write makes no progress instead of looping forever", async () => {
    const f = shortFile(0);
    await expect(writeFully(f.fh, Buffer.from("abcd"), 0)).rejects.toThrow(/made no progress/);
  });
});
