/**
 * The in-memory time series store of the LSMM: per segment, multi-resolution
 * ring buffers of access counts (e.g. 10 × 1 s, 60 × 1 min, 48 × 1 h), held in
 * typed arrays and allocated in chunks of segments on first touch, so an agent
 * that holds few segments pays for few.
 *
 * Each slot holds `zones + 2` Uint32 cells: [writes, unattributed accesses,
 * accesses from zone 0, zone 1, ...]. Reads are derived (all accesses minus
 * writes). Bytes per segment = slots·(zones+2)·4 + levels·8; with the default
 * 118 slots, 3 zones and 3 levels: 2,384 bytes, so 100,000 segments take 238 MB.
 *
 * Ring buffers are advanced lazily: each (segment, level) remembers the
 * absolute slot number of its newest slot and clears skipped slots when a
 * newer event arrives. An event is written to the finest level only; a finest
 * slot is added to the coarser levels when its ring position is reused, and
 * readers of a coarser level add the finest slots not yet rolled up. So an
 * event touches two cache lines of its segment whatever the number of levels.
 * Coarser resolutions must be multiples of the finest. Events older than the
 * finest span go straight to the coarser levels; older than a level's span,
 * they are ignored by it.
 */
import { UsageError } from "../errors.js";
import { fnv1a64Bytes } from "./hash.js";

export type AccessType = "read" | "write";
export const ACCESS_TYPES: readonly AccessType[] = ["read", "write"];

export interface WindowLevel {
  resolutionSeconds: number;
  slots: number;
}

export const DEFAULT_LEVELS: readonly WindowLevel[] = [
  { resolutionSeconds: 1, slots: 10 },
  { resolutionSeconds: 60, slots: 60 },
  { resolutionSeconds: 3600, slots: 48 },
];

export interface AccessWindowsOptions {
  segmentCount: number;
  zones: readonly string[];
  levels?: readonly WindowLevel[];
}

export interface SegmentRate {
  reads: number;
  writes: number;
  total: number;
  /** accesses/s per zone, in zone order; unattributed accesses are in `total` only. */
  byZone: number[];
}

const CHUNK_BITS = 10;
const CHUNK = 1 << CHUNK_BITS;
const EMPTY = -1;
const CELL_WRITES = 0;
const CELL_UNATTRIBUTED = 1;
const MAGIC = "SCAW1";

interface Chunk {
  /** [segment][level] → absolute slot number of the newest slot, or EMPTY. */
  stamps: Float64Array;
  /** [segment][slot across levels][cell] */
  cells: Uint32Array;
}

/** Non-negative modulo: slot numbers may be negative on virtual clocks near zero. */
function mod(a: number, n: number): number {
  const r = a % n;
  return r < 0 ? r + n : r;
}

export function parseAccessType(value: unknown): AccessType {
  if (value === "read" || value === "write") return value;
  throw new UsageError(`unknown access type ${JSON.stringify(value)}`, { hint: "use read or write" });
}

export class AccessWindows {
  readonly segmentCount: number;
  readonly zones: readonly string[];
  readonly levels: readonly WindowLevel[];
  readonly cellsPerSlot: number;
  readonly slotsPerSegment: number;
  private readonly levelOffset: Int32Array;
  private readonly levelSlots: Int32Array;
  private readonly resolutionMs: Float64Array;
  private readonly zoneIndex = new Map<string, number>();
  private readonly scratch: Uint32Array;
  private readonly chunks: (Chunk | undefined)[];

  constructor(opts: AccessWindowsOptions) {
    const levels = opts.levels ?? DEFAULT_LEVELS;
    if (!Number.isInteger(opts.segmentCount) || opts.segmentCount < 1) {
      throw new UsageError(`segment count must be a positive integer, got ${opts.segmentCount}`);
    }
    if (levels.length === 0) throw new UsageError("access windows need at least one level");
    for (let i = 1; i < levels.length; i++) {
      if (levels[i].resolutionSeconds <= levels[i - 1].resolutionSeconds) {
        throw new UsageError("window levels must go from the finest resolution to the coarsest");
      }
      if (levels[i].resolutionSeconds % levels[0].resolutionSeconds !== 0) {
        throw new UsageError("every window level's resolution must be a multiple of the finest one");
      }
    }
    this.segmentCount = opts.segmentCount;
    this.zones = [...opts.zones];
    this.zones.forEach((z, i) => this.zoneIndex.set(z, i));
    this.levels = levels.map((l) => ({ ...l }));
    this.cellsPerSlot = this.zones.length + 2;
    this.scratch = new Uint32Array(this.cellsPerSlot);
    this.levelOffset = new Int32Array(levels.length);
    this.levelSlots = Int32Array.from(levels, (l) => l.slots);
    this.resolutionMs = new Float64Array(levels.length);
    let offset = 0;
    levels.forEach((l, i) => {
      this.levelOffset[i] = offset;
      this.resolutionMs[i] = l.resolutionSeconds * 1000;
      offset += l.slots;
    });
    this.slotsPerSegment = offset;
    this.chunks = new Array(Math.ceil(opts.segmentCount / CHUNK));
  }

  /** Bytes one segment's windows take once allocated. */
  get bytesPerSegment(): number {
    return this.slotsPerSegment * this.cellsPerSlot * 4 + this.levels.length * 8;
  }

  /** Bytes currently allocated. */
  get allocatedBytes(): number {
    let n = 0;
    for (const c of this.chunks) if (c) n += c.cells.byteLength + c.stamps.byteLength;
    return n;
  }

  /** The index of a zone, -1 when the origin is not given; an unknown zone is an error. */
  zoneIndexOf(zone: string | undefined): number {
    if (zone === undefined || zone === "") return -1;
    const i = this.zoneIndex.get(zone);
    if (i === undefined) {
      throw new UsageError(`unknown origin zone ${JSON.stringify(zone)}`, {
        hint: `configured zones: ${this.zones.join(", ")}`,
      });
    }
    return i;
  }

  private chunkFor(segment: number): Chunk {
    const ci = segment >>> CHUNK_BITS;
    let chunk = this.chunks[ci];
    if (!chunk) {
      chunk = {
        stamps: new Float64Array(CHUNK * this.levels.length).fill(EMPTY),
        cells: new Uint32Array(CHUNK * this.slotsPerSegment * this.cellsPerSlot),
      };
      this.chunks[ci] = chunk;
    }
    return chunk;
  }

  /**
   * Counts `count` accesses of one type to a segment at time nowMs, from zone
   * index zoneIdx (-1: unattributed). The hot path: no allocation, and only
   * the finest level is written — its slots are rolled up into the coarser
   * levels when they are evicted, and readers add the slots not yet rolled
   * up — so an event touches two cache lines of the segment, not one per level.
   */
  record(segment: number, isWrite: boolean, zoneIdx: number, nowMs: number, count = 1): void {
    if (segment < 0 || segment >= this.segmentCount || !(segment === (segment | 0))) {
      throw new UsageError(`segment ${segment} is outside 0..${this.segmentCount - 1}`);
    }
    const chunk = this.chunkFor(segment);
    const local = segment & (CHUNK - 1);
    const cps = this.cellsPerSlot;
    const zoneCell = zoneIdx < 0 ? CELL_UNATTRIBUTED : zoneIdx + 2;
    const segBase = local * this.slotsPerSegment;
    const si0 = local * this.levels.length;
    const slots0 = this.levelSlots[0];
    const abs0 = Math.floor(nowMs / this.resolutionMs[0]);
    const newest0 = chunk.stamps[si0];
    if (abs0 > newest0) {
      this.advanceFinest(chunk, local, segBase, newest0, abs0);
      chunk.stamps[si0] = abs0;
    } else if (newest0 - abs0 >= slots0) {
      // older than the finest level's span: straight into the coarser levels (rare)
      const v = this.scratch.fill(0);
      v[zoneCell] = count;
      if (isWrite) v[CELL_WRITES] = count;
      for (let l = 1; l < this.levels.length; l++) {
        this.addVector(chunk, local, segBase, l, Math.floor(nowMs / this.resolutionMs[l]), v, 0);
      }
      return;
    }
    const cell = (segBase + mod(abs0, slots0)) * cps;
    chunk.cells[cell + zoneCell] += count;
    if (isWrite) chunk.cells[cell + CELL_WRITES] += count;
  }

  /**
   * Moves the finest ring on to `abs0`: every slot whose position is reused
   * is first added to the coarser levels, oldest first, then cleared.
   */
  private advanceFinest(chunk: Chunk, local: number, segBase: number, newest0: number, abs0: number): void {
    const slots0 = this.levelSlots[0];
    const cps = this.cellsPerSlot;
    const cells = chunk.cells;
    if (newest0 === EMPTY) {
      cells.fill(0, segBase * cps, (segBase + slots0) * cps);
      return;
    }
    const last = Math.min(newest0, abs0 - slots0);
    for (let a = newest0 - slots0 + 1; a <= last; a++) {
      const base = (segBase + mod(a, slots0)) * cps;
      let any = 0;
      for (let c = 0; c < cps; c++) any |= cells[base + c];
      if (any !== 0) {
        const t = a * this.resolutionMs[0];
        for (let l = 1; l < this.levels.length; l++) {
          this.addVector(chunk, local, segBase, l, Math.floor(t / this.resolutionMs[l]), cells, base);
        }
        for (let c = 0; c < cps; c++) cells[base + c] = 0;
      }
    }
  }

  /** Adds a slot's cells (src[srcBase..]) to coarse level l at absolute slot absL, advancing that ring. */
  private addVector(
    chunk: Chunk,
    local: number,
    segBase: number,
    l: number,
    absL: number,
    src: Uint32Array,
    srcBase: number,
  ): void {
    const si = local * this.levels.length + l;
    const slots = this.levelSlots[l];
    const newest = chunk.stamps[si];
    if (absL > newest) {
      this.clearCoarse(chunk, segBase, l, newest, absL);
      chunk.stamps[si] = absL;
    } else if (newest - absL >= slots) {
      return; // older than this level's span
    }
    const cps = this.cellsPerSlot;
    const dst = (segBase + this.levelOffset[l] + mod(absL, slots)) * cps;
    for (let c = 0; c < cps; c++) chunk.cells[dst + c] += src[srcBase + c];
  }

  /** Clears the coarse slots between the newest one and `abs`. */
  private clearCoarse(chunk: Chunk, segBase: number, level: number, newest: number, abs: number): void {
    const slots = this.levelSlots[level];
    const cps = this.cellsPerSlot;
    const toClear = newest === EMPTY ? slots : Math.min(slots, abs - newest);
    const cells = chunk.cells;
    for (let k = 0; k < toClear; k++) {
      const base = (segBase + this.levelOffset[level] + mod(abs - k, slots)) * cps;
      for (let c = 0; c < cps; c++) cells[base + c] = 0;
    }
  }

  /**
   * Calls fn(absL, base) for every finest-level slot not yet rolled up, with
   * its absolute slot number at `level` and its cell offset.
   */
  private forEachPending(
    chunk: Chunk,
    local: number,
    level: number,
    fn: (absL: number, base: number) => void,
  ): void {
    const newest0 = chunk.stamps[local * this.levels.length];
    if (newest0 === EMPTY) return;
    const slots0 = this.levelSlots[0];
    const segBase = local * this.slotsPerSegment;
    for (let a = newest0 - slots0 + 1; a <= newest0; a++) {
      fn(
        Math.floor((a * this.resolutionMs[0]) / this.resolutionMs[level]),
        (segBase + mod(a, slots0)) * this.cellsPerSlot,
      );
    }
  }

  /** The finest level whose span covers windowSeconds (the coarsest if none does). */
  levelFor(windowSeconds: number): number {
    for (let l = 0; l < this.levels.length; l++) {
      const lv = this.levels[l];
      if (lv.resolutionSeconds * lv.slots >= windowSeconds) return l;
    }
    return this.levels.length - 1;
  }

  /**
   * Sums the cells of the last `n` slots of a level ending at nowMs into `acc`
   * (length cellsPerSlot). Returns false when the segment has no windows.
   */
  private sumSlots(segment: number, level: number, n: number, nowMs: number, acc: Float64Array): boolean {
    const chunk = this.chunks[segment >>> CHUNK_BITS];
    if (!chunk) return false;
    const local = segment & (CHUNK - 1);
    const newest = chunk.stamps[local * this.levels.length + level];
    const newest0 = chunk.stamps[local * this.levels.length];
    if (newest === EMPTY && newest0 === EMPTY) return false;
    const slots = this.levelSlots[level];
    const cur = Math.floor(nowMs / this.resolutionMs[level]);
    const cps = this.cellsPerSlot;
    const cells = chunk.cells;
    const segBase = local * this.slotsPerSegment;
    const span = Math.min(n, slots);
    if (newest !== EMPTY) {
      for (let k = 0; k < span; k++) {
        const abs = cur - k;
        if (abs > newest || newest - abs >= slots) continue; // not written yet, or overwritten
        const base = (segBase + this.levelOffset[level] + mod(abs, slots)) * cps;
        for (let c = 0; c < cps; c++) acc[c] += cells[base + c];
      }
    }
    if (level > 0) {
      this.forEachPending(chunk, local, level, (absL, base) => {
        if (absL > cur - span && absL <= cur) for (let c = 0; c < cps; c++) acc[c] += cells[base + c];
      });
    }
    return true;
  }

  /** Accesses per second to a segment over the last windowSeconds. */
  rate(segment: number, windowSeconds: number, nowMs: number): SegmentRate {
    const level = this.levelFor(windowSeconds);
    const res = this.levels[level].resolutionSeconds;
    const n = Math.max(1, Math.ceil(windowSeconds / res));
    const acc = new Float64Array(this.cellsPerSlot);
    this.sumSlots(segment, level, n, nowMs, acc);
    const span = Math.min(n, this.levels[level].slots) * res;
    let total = acc[CELL_UNATTRIBUTED];
    const byZone: number[] = [];
    for (let z = 0; z < this.zones.length; z++) {
      total += acc[z + 2];
      byZone.push(acc[z + 2] / span);
    }
    const writes = acc[CELL_WRITES];
    return { reads: (total - writes) / span, writes: writes / span, total: total / span, byZone };
  }

  /** Total accesses/s of every segment over the last windowSeconds, as one array (for the assigner). */
  loads(windowSeconds: number, nowMs: number): Float64Array {
    const out = new Float64Array(this.segmentCount);
    const level = this.levelFor(windowSeconds);
    const res = this.levels[level].resolutionSeconds;
    const n = Math.max(1, Math.ceil(windowSeconds / res));
    const span = Math.min(n, this.levels[level].slots) * res;
    const acc = new Float64Array(this.cellsPerSlot);
    for (let ci = 0; ci < this.chunks.length; ci++) {
      if (!this.chunks[ci]) continue;
      const end = Math.min(this.segmentCount, (ci + 1) * CHUNK);
      for (let s = ci * CHUNK; s < end; s++) {
        acc.fill(0);
        if (!this.sumSlots(s, level, n, nowMs, acc)) continue;
        let total = 0;
        for (let c = 1; c < this.cellsPerSlot; c++) total += acc[c];
        out[s] = total / span;
      }
    }
    return out;
  }

  /**
   * One level's counts for a segment, oldest slot first, ending at the slot
   * holding nowMs. `which`: "total", "reads", "writes", or a zone name.
   */
  series(segment: number, level: number, nowMs: number, which: string = "total"): Float64Array {
    const slots = this.levels[level].slots;
    const out = new Float64Array(slots);
    const zone = which === "total" || which === "reads" || which === "writes" ? -1 : this.zoneIndexOf(which);
    const chunk = this.chunks[segment >>> CHUNK_BITS];
    if (!chunk) return out;
    const local = segment & (CHUNK - 1);
    const newest = chunk.stamps[local * this.levels.length + level];
    const cur = Math.floor(nowMs / this.resolutionMs[level]);
    const cells = chunk.cells;
    const valueAt = (base: number): number => {
      if (which === "writes") return cells[base + CELL_WRITES];
      if (zone >= 0) return cells[base + zone + 2];
      let total = cells[base + CELL_UNATTRIBUTED];
      for (let z = 0; z < this.zones.length; z++) total += cells[base + z + 2];
      return which === "reads" ? total - cells[base + CELL_WRITES] : total;
    };
    const segBase = local * this.slotsPerSegment;
    if (newest !== EMPTY) {
      for (let k = 0; k < slots; k++) {
        const abs = cur - (slots - 1 - k);
        if (abs > newest || newest - abs >= slots) continue;
        out[k] += valueAt((segBase + this.levelOffset[level] + mod(abs, slots)) * this.cellsPerSlot);
      }
    }
    if (level > 0) {
      this.forEachPending(chunk, local, level, (absL, base) => {
        const k = slots - 1 - (cur - absL);
        if (k >= 0 && k < slots) out[k] += valueAt(base);
      });
    }
    return out;
  }

  /** Segments that have any windows allocated and written. */
  *activeSegments(): Generator<number> {
    for (let ci = 0; ci < this.chunks.length; ci++) {
      const chunk = this.chunks[ci];
      if (!chunk) continue;
      const end = Math.min(this.segmentCount, (ci + 1) * CHUNK);
      for (let s = ci * CHUNK; s < end; s++) {
        const local = s & (CHUNK - 1);
        if (chunk.stamps[local * this.levels.length] !== EMPTY) yield s;
        else {
          for (let l = 1; l < this.levels.length; l++) {
            if (chunk.stamps[local * this.levels.length + l] !== EMPTY) {
              yield s;
              break;
            }
          }
        }
      }
    }
  }

  /** One segment's raw windows, for moving history with a shard. */
  exportSegment(segment: number): SegmentWindows | undefined {
    const chunk = this.chunks[segment >>> CHUNK_BITS];
    if (!chunk) return undefined;
    const local = segment & (CHUNK - 1);
    const nl = this.levels.length;
    const stamps = Array.from(chunk.stamps.subarray(local * nl, local * nl + nl));
    if (stamps.every((s) => s === EMPTY)) return undefined;
    const size = this.slotsPerSegment * this.cellsPerSlot;
    const cells = Array.from(chunk.cells.subarray(local * size, local * size + size));
    return { segment, zones: [...this.zones], levels: this.levels.map((l) => ({ ...l })), stamps, cells };
  }

  /** Replaces one segment's windows with exported ones (same zones and levels required). */
  importSegment(data: SegmentWindows): void {
    if (
      data.zones.join(",") !== this.zones.join(",") ||
      JSON.stringify(data.levels) !== JSON.stringify(this.levels)
    ) {
      throw new UsageError("access windows were recorded with other zones or levels and cannot be merged");
    }
    const size = this.slotsPerSegment * this.cellsPerSlot;
    if (data.cells.length !== size || data.stamps.length !== this.levels.length) {
      throw new UsageError("access windows for a segment have the wrong size");
    }
    const chunk = this.chunkFor(data.segment);
    const local = data.segment & (CHUNK - 1);
    chunk.stamps.set(data.stamps, local * this.levels.length);
    chunk.cells.set(data.cells, local * size);
  }

  /** The whole store as bytes: magic, header, chunks, checksum. */
  serialize(): Uint8Array {
    const present: number[] = [];
    this.chunks.forEach((c, i) => c && present.push(i));
    const header = new TextEncoder().encode(
      JSON.stringify({
        segmentCount: this.segmentCount,
        zones: this.zones,
        levels: this.levels,
        chunks: present,
      }),
    );
    const stampBytes = CHUNK * this.levels.length * 8;
    const cellBytes = CHUNK * this.slotsPerSegment * this.cellsPerSlot * 4;
    const bodyLen = 5 + 4 + header.length + present.length * (stampBytes + cellBytes);
    const out = new Uint8Array(bodyLen + 16);
    out.set(new TextEncoder().encode(MAGIC), 0);
    new DataView(out.buffer).setUint32(5, header.length, true);
    out.set(header, 9);
    let off = 9 + header.length;
    for (const i of present) {
      const c = this.chunks[i]!;
      out.set(new Uint8Array(c.stamps.buffer, c.stamps.byteOffset, c.stamps.byteLength), off);
      off += stampBytes;
      out.set(new Uint8Array(c.cells.buffer, c.cells.byteOffset, c.cells.byteLength), off);
      off += cellBytes;
    }
    out.set(new TextEncoder().encode(fnv1a64Bytes(out.subarray(0, bodyLen))), bodyLen);
    return out;
  }

  /** Reads bytes written by serialize(); a truncated or altered buffer is refused. */
  static deserialize(bytes: Uint8Array): AccessWindows {
    const corrupt = (why: string) => new UsageError(`access windows file is corrupt: ${why}`);
    if (bytes.length < 9 + 16 || new TextDecoder().decode(bytes.subarray(0, 5)) !== MAGIC) {
      throw corrupt("bad magic or too short");
    }
    const bodyLen = bytes.length - 16;
    const sum = new TextDecoder().decode(bytes.subarray(bodyLen));
    if (sum !== fnv1a64Bytes(bytes.subarray(0, bodyLen))) throw corrupt("checksum mismatch");
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const hlen = view.getUint32(5, true);
    if (9 + hlen > bodyLen) throw corrupt("header length out of range");
    let header: { segmentCount: number; zones: string[]; levels: WindowLevel[]; chunks: number[] };
    try {
      header = JSON.parse(new TextDecoder().decode(bytes.subarray(9, 9 + hlen)));
    } catch {
      throw corrupt("header is not JSON");
    }
    const w = new AccessWindows({
      segmentCount: header.segmentCount,
      zones: header.zones,
      levels: header.levels,
    });
    const stampBytes = CHUNK * w.levels.length * 8;
    const cellBytes = CHUNK * w.slotsPerSegment * w.cellsPerSlot * 4;
    let off = 9 + hlen;
    if (off + header.chunks.length * (stampBytes + cellBytes) !== bodyLen) throw corrupt("length mismatch");
    for (const i of header.chunks) {
      if (!Number.isInteger(i) || i < 0 || i >= w.chunks.length) throw corrupt("chunk index out of range");
      const stamps = new Float64Array(Uint8Array.prototype.slice.call(bytes, off, off + stampBytes).buffer);
      off += stampBytes;
      const cells = new Uint32Array(Uint8Array.prototype.slice.call(bytes, off, off + cellBytes).buffer);
      off += cellBytes;
      w.chunks[i] = { stamps, cells };
    }
    return w;
  }
}

/** One segment's windows as plain data (moves with its shard). */
export interface SegmentWindows {
  segment: number;
  zones: string[];
  levels: WindowLevel[];
  stamps: number[];
  cells: number[];
}
