/**
 * The in-memory time series store of the LSMM: per segment, multi-resolution
 * ring buffers of access counts (e.g. 10 × 1 s, 60 × 1 min, 48 × 1 h), held in
 * typed arrays and allocated in chunks of segments on first touch, so an agent
 * that holds few segments pays for few.
 *
 * Each slot holds `zones + 2` Uint32 cells: [writes, unattributed accesses,
 * accesses from zone 0, zone 1, ...]. Reads are derived (all accesses minus
 * writes). Counts saturate at 2^32 - 1 instead of wrapping (a wrapped count
 * would make the hottest segment look cold).
 *
 * Memory layout, chosen so that an event touches one small record:
 *  - hot (per segment: 2 + cells words): the newest finest slot's absolute
 *    number and its cells, the "current slot" accumulator. An event in the
 *    current slot touches this record only, and the hot records of 100,000
 *    segments take 2.8 MB, so they stay in the CPU caches and TLB where the
 *    whole store (227 MiB) cannot.
 *  - cold (per segment): the coarse levels' newest slot numbers, the finest
 *    level's slots0 - 1 older slots (ring indexed mod slots0 - 1), and the
 *    coarse rings (indexed mod slots). Touched when a segment's finest slot
 *    moves on (at most once per segment per finest resolution), by late
 *    events, and by readers.
 * Slot numbers are integers up to 2^53 in magnitude, kept as two Uint32 words
 * (low, high as signed); a ring never written holds -2^63, never a real slot.
 * Bytes per segment = slots·(zones+2)·4 + levels·8, as before the split; with
 * the default 118 slots, 3 zones and 3 levels: 2,384 bytes, so 100,000
 * segments take 227 MiB.
 *
 * record() queues events and applies them 64 at a time, first touching every
 * queued event's hot record so that the CPU overlaps their cache misses
 * (recordBatch does the same for a caller's batch). Every reader applies the
 * queue first, so it is never observable.
 *
 * Rings are advanced lazily: a newer event moves the current slot into the
 * finest ring, and a finest slot is added to the coarser levels when its
 * ring position is reused; readers of a coarser level add the finest slots
 * not yet rolled up. Coarser resolutions must be multiples of the finest.
 * Events older than the finest span go straight to the coarser levels; older
 * than a level's span, they are ignored by it.
 *
 * A rate over W seconds is over the sliding window [now - W, now] of the
 * finest level whose span covers W: its slots in the window, the newest one
 * partial (accesses so far), the oldest weighted by the fraction of it inside
 * the window (accesses taken as even over a slot). When the level no longer
 * holds that oldest slot (W equal to its span), the rate is over the time
 * the slots it holds cover.
 *
 * The serialized form (SCAW1) and SegmentWindows are the layout of the
 * previous version, one Float64 stamp per level (-1: never written) and one
 * ring of `slots` positions per level indexed mod slots, and are converted on
 * the way in and out: files and exports written by either version are read
 * by both. (So a ring whose newest slot is -1, i.e. the second before the
 * epoch on a virtual clock, is read back as never written; in memory it is
 * not.)
 */
import { UsageError } from "../errors.js";
import { Fnv1a64 } from "./hash.js";
import { runAtOnce } from "./steps.js";

export type AccessType = "read" | "write";
export const ACCESS_TYPES: readonly AccessType[] = ["read", "write"];
/** What a zone may be called (the config's `zones`, the clients' zone, a trace's zones). */
export const ZONE_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,31}$/;
/** What `series(…, which)` reads besides a zone: no zone may be named so. */
export const RESERVED_ZONE_NAMES: readonly string[] = ["total", "reads", "writes"];

/** Throws when a zone takes one of RESERVED_ZONE_NAMES (`context` prefixes the message; `hint`, if given, goes with it). */
export function checkZoneNames(zones: readonly string[], context = "", hint?: string): void {
  const reserved = zones.find((z) => RESERVED_ZONE_NAMES.includes(z));
  if (reserved !== undefined) {
    throw new UsageError(
      `${context}"${reserved}" cannot name a zone: ${RESERVED_ZONE_NAMES.join(", ")} name the access windows' other series`,
      { hint },
    );
  }
}

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

/** recordBatch's op codes. */
export const OP_READ = 0;
export const OP_WRITE = 1;

const CHUNK_BITS = 10;
const CHUNK = 1 << CHUNK_BITS;
const CHUNK_MASK = CHUNK - 1;
/** Events record() queues before applying them together (see flush). */
const PENDING = 64;
const TWO_32 = 4294967296;
/** The slot number of a ring never written, in memory: high word 0x80000000, i.e. -2^63. */
const EMPTY = -9223372036854775808;
/** How SCAW1 files and SegmentWindows mark a ring never written (so a real slot -1 reads back as empty). */
const FILE_EMPTY = -1;
const MAX_STAMP = 2 ** 53;
const MAX_CELL = 0xffffffff;
const CELL_WRITES = 0;
const CELL_UNATTRIBUTED = 1;
const MAGIC = "SCAW1";
/** Bytes a step of deserializeSteps checksums. */
const SUM_PIECE = 1 << 19;

/** Non-negative modulo: slot numbers may be negative on virtual clocks near zero. */
function mod(a: number, n: number): number {
  const r = a % n;
  return r < 0 ? r + n : r;
}

function readStamp(a: Uint32Array, i: number): number {
  return (a[i + 1] | 0) * TWO_32 + a[i];
}

function writeStamp(a: Uint32Array, i: number, stamp: number): void {
  const hi = Math.floor(stamp / TWO_32);
  a[i] = stamp - hi * TWO_32;
  a[i + 1] = hi; // stored mod 2^32, read back signed
}

/** A stamp from a file or an export: an integer slot number, or FILE_EMPTY; anything else is refused. */
function stampFromFile(s: number, corrupt: (why: string) => Error): number {
  if (s === FILE_EMPTY) return EMPTY;
  if (!Number.isInteger(s) || Math.abs(s) >= MAX_STAMP) throw corrupt(`slot number ${s} is not an integer`);
  return s;
}

function stampToFile(s: number): number {
  return s === EMPTY ? FILE_EMPTY : s;
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
  /** Slots across all levels (the current finest slot included). */
  readonly slotsPerSegment: number;
  private readonly levelCount: number;
  private readonly levelSlots: Int32Array;
  private readonly resolutionMs: Float64Array;
  /** Level l's resolution ÷ the finest one (an integer). */
  private readonly ratio: Float64Array;
  private readonly slots0: number;
  /** Positions in the finest ring of older slots: slots0 - 1. */
  private readonly ring0Slots: number;
  private readonly res0Ms: number;
  /** Words per hot record: [stamp lo, stamp hi, cells...]. */
  private readonly hotStride: number;
  /** Words per cold record: [stamps of levels 1.., finest ring, coarse rings]. */
  private readonly coldStride: number;
  private readonly ring0Base: number;
  /** Word offset of level l's ring in a cold record (l ≥ 1). */
  private readonly coldLevelBase: Int32Array;
  /** Cell offset of level l's ring in the file layout. */
  private readonly fileLevelOffset: Int32Array;
  private readonly zoneIndex = new Map<string, number>();
  /** Zones and levels, as one string: two stores with the same one lay a segment out alike. */
  private readonly layoutKey: string;
  private readonly scratch: Uint32Array;
  private readonly hot: (Uint32Array | undefined)[];
  private readonly cold: (Uint32Array | undefined)[];
  /** Where the touch passes leave their loads, so that they are not optimised away. */
  private touched = 0;
  /**
   * Events recorded but not yet applied, oldest first: segment, (cell << 1) |
   * write, count, finest slot number. Applied PENDING at a time, and before
   * anything reads the windows, so that their cache misses overlap.
   */
  private readonly pendingSegment = new Uint32Array(PENDING);
  private readonly pendingCell = new Int32Array(PENDING);
  private readonly pendingCount = new Uint32Array(PENDING);
  private readonly pendingSlot = new Float64Array(PENDING);
  private pendingN = 0;

  constructor(opts: AccessWindowsOptions) {
    const levels = opts.levels ?? DEFAULT_LEVELS;
    if (!Number.isInteger(opts.segmentCount) || opts.segmentCount < 1) {
      throw new UsageError(`segment count must be a positive integer, got ${opts.segmentCount}`);
    }
    if (!Array.isArray(levels) || levels.length === 0) {
      throw new UsageError("access windows need at least one level");
    }
    for (const l of levels) {
      if (
        !Number.isInteger(l?.resolutionSeconds) ||
        l.resolutionSeconds < 1 ||
        !Number.isInteger(l.slots) ||
        l.slots < 1
      ) {
        throw new UsageError("every window level needs whole positive resolutionSeconds and slots");
      }
    }
    for (let i = 1; i < levels.length; i++) {
      if (levels[i].resolutionSeconds <= levels[i - 1].resolutionSeconds) {
        throw new UsageError("window levels must go from the finest resolution to the coarsest");
      }
      if (levels[i].resolutionSeconds % levels[0].resolutionSeconds !== 0) {
        throw new UsageError("every window level's resolution must be a multiple of the finest one");
      }
    }
    if (!Array.isArray(opts.zones) || opts.zones.some((z) => typeof z !== "string")) {
      throw new UsageError("zones must be a list of names");
    }
    checkZoneNames(opts.zones);
    this.segmentCount = opts.segmentCount;
    this.zones = [...opts.zones];
    this.zones.forEach((z, i) => this.zoneIndex.set(z, i));
    this.levels = levels.map((l) => ({ resolutionSeconds: l.resolutionSeconds, slots: l.slots }));
    const nl = levels.length;
    const cps = this.zones.length + 2;
    this.levelCount = nl;
    this.cellsPerSlot = cps;
    this.scratch = new Uint32Array(cps);
    this.levelSlots = Int32Array.from(levels, (l) => l.slots);
    this.resolutionMs = Float64Array.from(levels, (l) => l.resolutionSeconds * 1000);
    this.ratio = Float64Array.from(levels, (l) => l.resolutionSeconds / levels[0].resolutionSeconds);
    this.slots0 = levels[0].slots;
    this.ring0Slots = this.slots0 - 1;
    this.res0Ms = this.resolutionMs[0];
    this.hotStride = 2 + cps;
    this.ring0Base = 2 * (nl - 1);
    this.coldLevelBase = new Int32Array(nl);
    this.fileLevelOffset = new Int32Array(nl);
    let cold = this.ring0Base + this.ring0Slots * cps;
    let file = this.slots0 * cps;
    for (let l = 1; l < nl; l++) {
      this.coldLevelBase[l] = cold;
      this.fileLevelOffset[l] = file;
      cold += levels[l].slots * cps;
      file += levels[l].slots * cps;
    }
    this.coldStride = cold;
    this.layoutKey = JSON.stringify([this.zones, this.levels]);
    this.slotsPerSegment = file / cps;
    const chunks = Math.ceil(opts.segmentCount / CHUNK);
    this.hot = new Array<Uint32Array | undefined>(chunks).fill(undefined);
    this.cold = new Array<Uint32Array | undefined>(chunks).fill(undefined);
  }

  /** Bytes one segment's windows take once allocated. */
  get bytesPerSegment(): number {
    return (this.hotStride + this.coldStride) * 4;
  }

  /** Bytes currently allocated. */
  get allocatedBytes(): number {
    this.flush();
    let n = 0;
    for (let ci = 0; ci < this.hot.length; ci++) {
      n += (this.hot[ci]?.byteLength ?? 0) + (this.cold[ci]?.byteLength ?? 0);
    }
    return n;
  }

  /** The index of a zone, -1 when the origin is not given; an unknown zone is an error. */
  zoneIndexOf(zone: string | undefined): number {
    if (zone === undefined || zone === "") return -1;
    // a scan beats a Map lookup for the few zones a deployment has
    const zones = this.zones;
    if (zones.length <= 8) {
      for (let i = 0; i < zones.length; i++) if (zones[i] === zone) return i;
    } else {
      const i = this.zoneIndex.get(zone);
      if (i !== undefined) return i;
    }
    throw new UsageError(`unknown origin zone ${JSON.stringify(zone)}`, {
      hint: `configured zones: ${this.zones.join(", ")}`,
    });
  }

  private allocate(ci: number): Uint32Array {
    const hot = new Uint32Array(CHUNK * this.hotStride);
    const cold = new Uint32Array(CHUNK * this.coldStride);
    for (let s = 0; s < CHUNK; s++) {
      writeStamp(hot, s * this.hotStride, EMPTY);
      for (let l = 1; l < this.levelCount; l++) writeStamp(cold, s * this.coldStride + 2 * (l - 1), EMPTY);
    }
    this.hot[ci] = hot;
    this.cold[ci] = cold;
    return hot;
  }

  private outside(segment: number): UsageError {
    return new UsageError(`segment ${segment} is outside 0..${this.segmentCount - 1}`);
  }

  /**
   * Counts `count` accesses of one type to a segment at time nowMs, from zone
   * index zoneIdx (negative: unattributed). The hot path: the event is checked
   * here (a bad one throws and changes nothing), queued, and applied with the
   * next PENDING - 1 events or before the next read, whichever comes first;
   * an event in its segment's current finest slot (nearly all) then adds to
   * that segment's hot record only.
   */
  record(segment: number, isWrite: boolean, zoneIdx: number, nowMs: number, count = 1): void {
    if (!(segment >= 0 && segment < this.segmentCount && segment === (segment | 0))) {
      throw this.outside(segment);
    }
    const cps = this.cellsPerSlot;
    const zoneCell = zoneIdx < 0 ? CELL_UNATTRIBUTED : zoneIdx + 2;
    if (!(zoneCell < cps && zoneCell === (zoneCell | 0))) {
      throw new UsageError(`zone index ${zoneIdx} is outside -1..${this.zones.length - 1}`);
    }
    if (count !== 1 && !(count >= 0 && count <= MAX_CELL && count === Math.floor(count))) {
      throw new UsageError(`an access count must be a whole number from 0 to ${MAX_CELL}, got ${count}`);
    }
    const abs0 = Math.floor(nowMs / this.res0Ms);
    if (!(Math.abs(abs0) < MAX_STAMP)) {
      throw new UsageError(`the access time ${nowMs} is not a usable number of milliseconds`);
    }
    const i = this.pendingN;
    this.pendingSegment[i] = segment;
    this.pendingCell[i] = (zoneCell << 1) | (isWrite ? 1 : 0);
    this.pendingCount[i] = count;
    this.pendingSlot[i] = abs0;
    this.pendingN = i + 1;
    if (i + 1 === PENDING) this.flush();
  }

  /**
   * Applies the queued events, oldest first. A first pass touches every
   * event's hot record: those loads are independent, so the CPU overlaps their
   * cache misses, where applying events one by one would wait for each.
   * Every reader calls this first, so the queue is never observable.
   */
  private flush(): void {
    const n = this.pendingN;
    if (n === 0) return;
    this.pendingN = 0;
    const segments = this.pendingSegment;
    const stride = this.hotStride;
    const hotChunks = this.hot;
    let touched = 0;
    for (let i = 0; i < n; i++) {
      const s = segments[i];
      const hot = hotChunks[s >>> CHUNK_BITS] ?? this.allocate(s >>> CHUNK_BITS);
      touched += hot[(s & CHUNK_MASK) * stride];
    }
    this.touched = touched;
    for (let i = 0; i < n; i++) {
      const s = segments[i];
      const hot = hotChunks[s >>> CHUNK_BITS]!;
      const h = (s & CHUNK_MASK) * stride;
      const packed = this.pendingCell[i];
      const zoneCell = packed >> 1;
      const count = this.pendingCount[i];
      const abs0 = this.pendingSlot[i];
      if ((hot[h + 1] | 0) * TWO_32 + hot[h] === abs0) {
        addCell(hot, h + 2 + zoneCell, count);
        if ((packed & 1) !== 0) addCell(hot, h + 2, count);
      } else {
        this.recordSlow(s, (packed & 1) !== 0, zoneCell, abs0, count);
      }
    }
  }

  /**
   * Records n events at nowMs, one access each: event i is to segments[i], a
   * write when ops[i] is OP_WRITE (any non-zero value), from zone index
   * zones[i] (-1: unattributed). The whole batch is validated before any of
   * it is recorded. A first pass touches every event's hot record: those
   * loads are independent, so the CPU overlaps their cache misses (measured:
   * 8–18% faster on uniformly spread segments; sorting the batch by segment
   * instead measured slower).
   */
  recordBatch(
    segments: Uint32Array,
    ops: Uint8Array,
    zones: Int8Array | Int16Array | Int32Array,
    n: number,
    nowMs: number,
  ): void {
    if (!Number.isInteger(n) || n < 0 || n > segments.length || n > ops.length || n > zones.length) {
      throw new UsageError(`a batch of ${n} events does not fit its arrays`);
    }
    if (!(Math.abs(nowMs) < MAX_STAMP))
      throw new UsageError(`the access time ${nowMs} is not a usable number`);
    const segmentCount = this.segmentCount;
    const nz = this.zones.length;
    for (let i = 0; i < n; i++) {
      if (segments[i] >= segmentCount) throw this.outside(segments[i]);
      const z = zones[i];
      if (z < -1 || z >= nz) throw new UsageError(`zone index ${z} is outside -1..${nz - 1}`);
    }
    this.flush(); // events recorded before the batch are applied before it
    const stride = this.hotStride;
    const hotChunks = this.hot;
    // touch every event's hot record first: independent loads whose misses overlap
    let touched = 0;
    for (let i = 0; i < n; i++) {
      const s = segments[i];
      const hot = hotChunks[s >>> CHUNK_BITS] ?? this.allocate(s >>> CHUNK_BITS);
      touched += hot[(s & CHUNK_MASK) * stride];
    }
    this.touched = touched;
    const abs0 = Math.floor(nowMs / this.res0Ms);
    for (let i = 0; i < n; i++) {
      const s = segments[i];
      const hot = hotChunks[s >>> CHUNK_BITS]!;
      const h = (s & CHUNK_MASK) * stride;
      const zoneCell = zones[i] + 2; // -1 (unattributed) → CELL_UNATTRIBUTED
      const isWrite = ops[i] !== OP_READ;
      if ((hot[h + 1] | 0) * TWO_32 + hot[h] === abs0) {
        const c = h + 2 + zoneCell;
        if (hot[c] < MAX_CELL) hot[c]++;
        if (isWrite && hot[h + 2] < MAX_CELL) hot[h + 2]++;
      } else {
        this.recordSlow(s, isWrite, zoneCell, abs0, 1);
      }
    }
  }

  /** An event outside the segment's current finest slot: a new slot, a late event, or a first one. */
  private recordSlow(segment: number, isWrite: boolean, zoneCell: number, abs0: number, count: number): void {
    if (!(Math.abs(abs0) < MAX_STAMP))
      throw new UsageError("the access time is not a usable number of milliseconds");
    const ci = segment >>> CHUNK_BITS;
    const hot = this.hot[ci] ?? this.allocate(ci);
    const cold = this.cold[ci]!;
    const local = segment & CHUNK_MASK;
    const h = local * this.hotStride;
    const cb = local * this.coldStride;
    const newest = readStamp(hot, h);
    if (abs0 >= newest) {
      if (abs0 > newest) {
        if (newest === EMPTY) this.clearFinest(hot, h, cold, cb);
        else this.advanceFinest(hot, h, cold, cb, newest, abs0);
        writeStamp(hot, h, abs0);
      }
      addCell(hot, h + 2 + zoneCell, count);
      if (isWrite) addCell(hot, h + 2, count);
    } else if (newest - abs0 < this.slots0) {
      // late, but still within the finest ring (so ring0Slots ≥ 1)
      const base = cb + this.ring0Base + mod(abs0, this.ring0Slots) * this.cellsPerSlot;
      addCell(cold, base + zoneCell, count);
      if (isWrite) addCell(cold, base + CELL_WRITES, count);
    } else {
      // older than the finest level's span: straight into the coarser levels (rare)
      const v = this.scratch.fill(0);
      v[zoneCell] = count;
      if (isWrite) v[CELL_WRITES] = count;
      for (let l = 1; l < this.levelCount; l++) {
        this.addToCoarse(cold, cb, l, Math.floor(abs0 / this.ratio[l]), v, 0);
      }
    }
  }

  /** Zeroes a segment's finest slots (a ring never written should hold zeros already; imports may not). */
  private clearFinest(hot: Uint32Array, h: number, cold: Uint32Array, cb: number): void {
    hot.fill(0, h + 2, h + this.hotStride);
    const base = cb + this.ring0Base;
    cold.fill(0, base, base + this.ring0Slots * this.cellsPerSlot);
  }

  /**
   * Moves a segment's finest level on from slot `newest` to slot `abs0`: every
   * finest slot that leaves the span is first added to the coarser levels,
   * oldest first, then cleared; the current slot moves into the ring when it
   * stays within the span.
   */
  private advanceFinest(
    hot: Uint32Array,
    h: number,
    cold: Uint32Array,
    cb: number,
    newest: number,
    abs0: number,
  ): void {
    const r0 = this.ring0Slots;
    const cps = this.cellsPerSlot;
    const last = Math.min(newest, abs0 - r0 - 1);
    for (let a = newest - r0; a <= last; a++) {
      const src = a === newest ? hot : cold;
      const base = a === newest ? h + 2 : cb + this.ring0Base + mod(a, r0) * cps;
      let any = 0;
      for (let c = 0; c < cps; c++) any |= src[base + c];
      if (any !== 0) {
        for (let l = 1; l < this.levelCount; l++) {
          this.addToCoarse(cold, cb, l, Math.floor(a / this.ratio[l]), src, base);
        }
        src.fill(0, base, base + cps);
      }
    }
    if (newest > last) {
      // newest ≥ abs0 - r0, so r0 ≥ 1; its ring position held slot newest - r0, just cleared
      const dst = cb + this.ring0Base + mod(newest, r0) * cps;
      for (let c = 0; c < cps; c++) {
        cold[dst + c] = hot[h + 2 + c];
        hot[h + 2 + c] = 0;
      }
    }
  }

  /** Adds a slot's cells (src[srcBase..]) to coarse level l at absolute slot absL, advancing that ring. */
  private addToCoarse(
    cold: Uint32Array,
    cb: number,
    l: number,
    absL: number,
    src: Uint32Array,
    srcBase: number,
  ): void {
    const si = cb + 2 * (l - 1);
    const slots = this.levelSlots[l];
    const newest = readStamp(cold, si);
    const cps = this.cellsPerSlot;
    const ring = cb + this.coldLevelBase[l];
    if (absL > newest) {
      const toClear = newest === EMPTY ? slots : Math.min(slots, absL - newest);
      for (let k = 0; k < toClear; k++) {
        const base = ring + mod(absL - k, slots) * cps;
        cold.fill(0, base, base + cps);
      }
      writeStamp(cold, si, absL);
    } else if (newest - absL >= slots) {
      return; // older than this level's span
    }
    const dst = ring + mod(absL, slots) * cps;
    for (let c = 0; c < cps; c++) addCell(cold, dst + c, src[srcBase + c]);
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
   * Which slots a sliding window [nowMs - windowSeconds, nowMs] covers, and
   * how: the slots from..to of `level`, the oldest weighted by the fraction of
   * its elapsed time inside the window (accesses are taken as spread evenly
   * over a slot), divided by durationMs. When the level no longer holds the
   * window's oldest slot, the rate is over the slots it holds, divided by the
   * time they cover (the same as assuming the missing part saw the same rate).
   */
  private window(windowSeconds: number, nowMs: number): WindowSpan {
    if (!(windowSeconds > 0) || !Number.isFinite(windowSeconds)) {
      throw new UsageError(`a rate window must be a positive number of seconds, got ${windowSeconds}`);
    }
    if (!Number.isFinite(nowMs)) throw new UsageError(`the time ${nowMs} is not a finite number`);
    const level = this.levelFor(windowSeconds);
    const res = this.resolutionMs[level];
    const cur = Math.floor(nowMs / res);
    const oldest = cur - this.levelSlots[level] + 1;
    const start = nowMs - windowSeconds * 1000;
    const first = Math.floor(start / res);
    if (first >= oldest) {
      const end = Math.min((first + 1) * res, nowMs);
      const weight = (end - start) / (end - first * res);
      return { level, from: first, to: cur, fromWeight: weight, durationMs: windowSeconds * 1000 };
    }
    return { level, from: oldest, to: cur, fromWeight: 1, durationMs: Math.max(nowMs - oldest * res, res) };
  }

  /**
   * Adds the cells of `level`'s slots from..to of a segment into acc (length
   * cellsPerSlot), slot `from` times fromWeight. Returns false when the
   * segment has no windows.
   */
  private sumSlots(
    segment: number,
    level: number,
    from: number,
    to: number,
    fromWeight: number,
    acc: Float64Array,
  ): boolean {
    const ci = segment >>> CHUNK_BITS;
    const hot = this.hot[ci];
    if (hot === undefined) return false;
    const cold = this.cold[ci]!;
    const local = segment & CHUNK_MASK;
    const h = local * this.hotStride;
    const cb = local * this.coldStride;
    const cps = this.cellsPerSlot;
    const newest0 = readStamp(hot, h);
    let any = newest0 !== EMPTY;
    if (level > 0) {
      const newest = readStamp(cold, cb + 2 * (level - 1));
      if (newest !== EMPTY) {
        any = true;
        const slots = this.levelSlots[level];
        const ring = cb + this.coldLevelBase[level];
        const hiA = Math.min(to, newest);
        for (let a = Math.max(from, newest - slots + 1); a <= hiA; a++) {
          const base = ring + mod(a, slots) * cps;
          const w = a === from ? fromWeight : 1;
          for (let c = 0; c < cps; c++) acc[c] += cold[base + c] * w;
        }
      }
    }
    if (newest0 === EMPTY) return any;
    // the finest slots: at level 0 the slots themselves, above it the ones not rolled up yet
    const r0 = this.ring0Slots;
    const ratio = this.ratio[level];
    for (let a = newest0 - r0; a <= newest0; a++) {
      const absL = level === 0 ? a : Math.floor(a / ratio);
      if (absL < from || absL > to) continue;
      const w = absL === from ? fromWeight : 1;
      if (a === newest0) for (let c = 0; c < cps; c++) acc[c] += hot[h + 2 + c] * w;
      else {
        const base = cb + this.ring0Base + mod(a, r0) * cps;
        for (let c = 0; c < cps; c++) acc[c] += cold[base + c] * w;
      }
    }
    return true;
  }

  /** Accesses per second to a segment over the sliding window of the last windowSeconds. */
  rate(segment: number, windowSeconds: number, nowMs: number): SegmentRate {
    this.flush();
    const span = this.window(windowSeconds, nowMs);
    const acc = new Float64Array(this.cellsPerSlot);
    if (segment >= 0 && segment < this.segmentCount && segment === (segment | 0)) {
      this.sumSlots(segment, span.level, span.from, span.to, span.fromWeight, acc);
    }
    const perS = 1000 / span.durationMs;
    let total = acc[CELL_UNATTRIBUTED];
    const byZone: number[] = [];
    for (let z = 0; z < this.zones.length; z++) {
      total += acc[z + 2];
      byZone.push(acc[z + 2] * perS);
    }
    const writes = acc[CELL_WRITES];
    return { reads: (total - writes) * perS, writes: writes * perS, total: total * perS, byZone };
  }

  /** Total accesses/s of every segment over the last windowSeconds, as one array (for the assigner). */
  loads(windowSeconds: number, nowMs: number): Float64Array {
    this.flush();
    const out = new Float64Array(this.segmentCount);
    const span = this.window(windowSeconds, nowMs);
    const perS = 1000 / span.durationMs;
    const acc = new Float64Array(this.cellsPerSlot);
    for (let ci = 0; ci < this.hot.length; ci++) {
      if (!this.hot[ci]) continue;
      const end = Math.min(this.segmentCount, (ci + 1) * CHUNK);
      for (let s = ci * CHUNK; s < end; s++) {
        acc.fill(0);
        if (!this.sumSlots(s, span.level, span.from, span.to, span.fromWeight, acc)) continue;
        let total = 0;
        for (let c = 1; c < this.cellsPerSlot; c++) total += acc[c];
        out[s] = total * perS;
      }
    }
    return out;
  }

  /**
   * One level's counts for a segment, oldest slot first, ending at the slot
   * holding nowMs. `which`: "total", "reads", "writes", or a zone name.
   */
  series(segment: number, level: number, nowMs: number, which: string = "total"): Float64Array {
    this.flush();
    if (!Number.isInteger(level) || level < 0 || level >= this.levelCount) {
      throw new UsageError(`level ${level} is outside 0..${this.levelCount - 1}`);
    }
    const slots = this.levelSlots[level];
    const out = new Float64Array(slots);
    const zone = which === "total" || which === "reads" || which === "writes" ? -1 : this.zoneIndexOf(which);
    const ci = segment >>> CHUNK_BITS;
    const hot = this.hot[ci];
    if (!(segment >= 0 && segment < this.segmentCount) || hot === undefined) return out;
    const cold = this.cold[ci]!;
    const local = segment & CHUNK_MASK;
    const h = local * this.hotStride;
    const cb = local * this.coldStride;
    const cps = this.cellsPerSlot;
    const nz = this.zones.length;
    const cur = Math.floor(nowMs / this.resolutionMs[level]);
    const valueAt = (cells: Uint32Array, base: number): number => {
      if (which === "writes") return cells[base + CELL_WRITES];
      if (zone >= 0) return cells[base + zone + 2];
      let total = cells[base + CELL_UNATTRIBUTED];
      for (let z = 0; z < nz; z++) total += cells[base + z + 2];
      return which === "reads" ? total - cells[base + CELL_WRITES] : total;
    };
    if (level > 0) {
      const newest = readStamp(cold, cb + 2 * (level - 1));
      if (newest !== EMPTY) {
        const ring = cb + this.coldLevelBase[level];
        for (let k = 0; k < slots; k++) {
          const abs = cur - (slots - 1 - k);
          if (abs > newest || newest - abs >= slots) continue;
          out[k] += valueAt(cold, ring + mod(abs, slots) * cps);
        }
      }
    }
    const newest0 = readStamp(hot, h);
    if (newest0 !== EMPTY) {
      const r0 = this.ring0Slots;
      for (let a = newest0 - r0; a <= newest0; a++) {
        const absL = level === 0 ? a : Math.floor(a / this.ratio[level]);
        const k = slots - 1 - (cur - absL);
        if (k < 0 || k >= slots) continue;
        out[k] += a === newest0 ? valueAt(hot, h + 2) : valueAt(cold, cb + this.ring0Base + mod(a, r0) * cps);
      }
    }
    return out;
  }

  private hasWindows(hot: Uint32Array, cold: Uint32Array, local: number): boolean {
    if (readStamp(hot, local * this.hotStride) !== EMPTY) return true;
    const cb = local * this.coldStride;
    for (let l = 1; l < this.levelCount; l++) if (readStamp(cold, cb + 2 * (l - 1)) !== EMPTY) return true;
    return false;
  }

  /** Segments that have any windows allocated and written. */
  *activeSegments(): Generator<number> {
    this.flush();
    for (let ci = 0; ci < this.hot.length; ci++) {
      const hot = this.hot[ci];
      if (!hot) continue;
      const cold = this.cold[ci]!;
      const end = Math.min(this.segmentCount, (ci + 1) * CHUNK);
      for (let s = ci * CHUNK; s < end; s++) if (this.hasWindows(hot, cold, s & CHUNK_MASK)) yield s;
    }
  }

  /**
   * Writes one segment's windows in the file layout (stamps: one per level,
   * FILE_EMPTY when never written; cells: the rings of all levels, each of
   * `slots` positions indexed mod slots) at stamps[so..] and cells[co..].
   */
  private toFileLayout(
    ci: number,
    local: number,
    stamps: Float64Array,
    so: number,
    cells: Uint32Array,
    co: number,
  ): void {
    const hot = this.hot[ci]!;
    const cold = this.cold[ci]!;
    const h = local * this.hotStride;
    const cb = local * this.coldStride;
    const cps = this.cellsPerSlot;
    const newest0 = readStamp(hot, h);
    stamps[so] = stampToFile(newest0);
    if (newest0 !== EMPTY) {
      const r0 = this.ring0Slots;
      // (element by element: a subarray per slot would be an object per slot, 60 per segment)
      for (let a = newest0 - r0; a < newest0; a++) {
        const dst = co + mod(a, this.slots0) * cps;
        const src = cb + this.ring0Base + mod(a, r0) * cps;
        for (let c = 0; c < cps; c++) cells[dst + c] = cold[src + c];
      }
      const dst = co + mod(newest0, this.slots0) * cps;
      for (let c = 0; c < cps; c++) cells[dst + c] = hot[h + 2 + c];
    }
    for (let l = 1; l < this.levelCount; l++) {
      stamps[so + l] = stampToFile(readStamp(cold, cb + 2 * (l - 1)));
      const base = cb + this.coldLevelBase[l];
      cells.set(cold.subarray(base, base + this.levelSlots[l] * cps), co + this.fileLevelOffset[l]);
    }
  }

  /**
   * Replaces one segment's windows with ones in the file layout (see
   * toFileLayout). A slot number that is not an integer is refused before
   * anything is changed.
   */
  private fromFileLayout(
    segment: number,
    stamps: ArrayLike<number>,
    so: number,
    cells: ArrayLike<number>,
    co: number,
    corrupt: (why: string) => Error,
  ): void {
    const nl = this.levelCount;
    const parsed: number[] = [];
    for (let l = 0; l < nl; l++) parsed.push(stampFromFile(stamps[so + l], corrupt));
    const ci = segment >>> CHUNK_BITS;
    const hot = this.hot[ci] ?? this.allocate(ci);
    const cold = this.cold[ci]!;
    const local = segment & CHUNK_MASK;
    const h = local * this.hotStride;
    const cb = local * this.coldStride;
    const cps = this.cellsPerSlot;
    this.clearFinest(hot, h, cold, cb);
    const newest0 = parsed[0];
    writeStamp(hot, h, newest0);
    if (newest0 !== EMPTY) {
      const r0 = this.ring0Slots;
      for (let a = newest0 - r0; a <= newest0; a++) {
        const src = co + mod(a, this.slots0) * cps;
        const dst = a === newest0 ? h + 2 : cb + this.ring0Base + mod(a, r0) * cps;
        const into = a === newest0 ? hot : cold;
        for (let c = 0; c < cps; c++) into[dst + c] = cells[src + c];
      }
    }
    for (let l = 1; l < nl; l++) {
      writeStamp(cold, cb + 2 * (l - 1), parsed[l]);
      const src = co + this.fileLevelOffset[l];
      const dst = cb + this.coldLevelBase[l];
      for (let k = 0; k < this.levelSlots[l] * cps; k++) cold[dst + k] = cells[src + k];
    }
  }

  /** One segment's raw windows, for moving history with a shard. */
  exportSegment(segment: number): SegmentWindows | undefined {
    this.flush();
    if (!(segment >= 0 && segment < this.segmentCount && segment === (segment | 0))) return undefined;
    const ci = segment >>> CHUNK_BITS;
    const hot = this.hot[ci];
    if (!hot || !this.hasWindows(hot, this.cold[ci]!, segment & CHUNK_MASK)) return undefined;
    const stamps = new Float64Array(this.levelCount);
    const cells = new Uint32Array(this.slotsPerSegment * this.cellsPerSlot);
    this.toFileLayout(ci, segment & CHUNK_MASK, stamps, 0, cells, 0);
    return {
      segment,
      zones: [...this.zones],
      levels: this.levels.map((l) => ({ ...l })),
      stamps: Array.from(stamps),
      cells: Array.from(cells),
    };
  }

  /**
   * Replaces one segment's windows with another store's, which must count
   * the same zones and levels: what importSegment(from.exportSegment(segment))
   * does (a segment `from` holds nothing of is left empty), copied in the
   * store's own layout instead of through the file layout and arrays of
   * numbers — about a microsecond a segment instead of tens (a collector
   * gathers every segment of a cluster this way).
   */
  copySegment(from: AccessWindows, segment: number): void {
    if (from.layoutKey !== this.layoutKey) {
      throw new UsageError("access windows were recorded with other zones or levels and cannot be merged");
    }
    if (!(segment >= 0 && segment < this.segmentCount && segment === (segment | 0)))
      throw this.outside(segment);
    if (!(segment < from.segmentCount)) throw from.outside(segment);
    this.flush();
    from.flush();
    const ci = segment >>> CHUNK_BITS;
    const local = segment & CHUNK_MASK;
    const srcHot = from.hot[ci];
    if (!srcHot && !this.hot[ci]) return; // empty there, empty here
    const hot = this.hot[ci] ?? this.allocate(ci);
    const cold = this.cold[ci]!;
    const h = local * this.hotStride;
    const cb = local * this.coldStride;
    if (srcHot) {
      hot.set(srcHot.subarray(h, h + this.hotStride), h);
      cold.set(from.cold[ci]!.subarray(cb, cb + this.coldStride), cb);
    } else {
      hot.fill(0, h, h + this.hotStride);
      writeStamp(hot, h, EMPTY);
      cold.fill(0, cb, cb + this.coldStride);
      for (let l = 1; l < this.levelCount; l++) writeStamp(cold, cb + 2 * (l - 1), EMPTY);
    }
  }

  /**
   * Replaces one segment's windows with exported ones (same zones and levels
   * required). `clockOffsetMs`: how far the exporter's clock was ahead of
   * this reader's (negative: behind). Slot numbers are times on the clock that
   * counted them, so each level's slot numbers move back by the offset rounded
   * to that level's resolution, and its ring turns with them: the counts land
   * in the intervals they happened in on this clock (each level rounded on its
   * own misplaces a count by at most half a slot; none is lost or doubled).
   */
  importSegment(data: SegmentWindows, clockOffsetMs = 0): void {
    this.flush();
    if (!Number.isFinite(clockOffsetMs)) {
      throw new UsageError(`a clock offset must be a finite number of milliseconds, got ${clockOffsetMs}`);
    }
    if (
      !Array.isArray(data?.zones) ||
      !Array.isArray(data.levels) ||
      data.zones.join(",") !== this.zones.join(",") ||
      JSON.stringify(data.levels) !== JSON.stringify(this.levels)
    ) {
      throw new UsageError("access windows were recorded with other zones or levels and cannot be merged");
    }
    const size = this.slotsPerSegment * this.cellsPerSlot;
    if (
      !Array.isArray(data.cells) ||
      !Array.isArray(data.stamps) ||
      data.cells.length !== size ||
      data.stamps.length !== this.levels.length
    ) {
      throw new UsageError("access windows for a segment have the wrong size");
    }
    if (!(data.segment >= 0 && data.segment < this.segmentCount && Number.isInteger(data.segment))) {
      throw this.outside(data.segment);
    }
    for (const c of data.cells) {
      if (!Number.isInteger(c) || c < 0 || c > MAX_CELL) {
        throw new UsageError(`access windows for a segment hold a count that is not a whole number: ${c}`);
      }
    }
    const shifted = clockOffsetMs === 0 ? data : this.shiftFileLayout(data, clockOffsetMs);
    this.fromFileLayout(
      data.segment,
      shifted.stamps,
      0,
      shifted.cells,
      0,
      (why) => new UsageError(`access windows for a segment are malformed: ${why}`),
    );
  }

  /** A segment's windows in the file layout with every level moved back by offsetMs (see importSegment). */
  private shiftFileLayout(
    data: { stamps: readonly number[]; cells: readonly number[] },
    offsetMs: number,
  ): { stamps: number[]; cells: number[] } {
    const cps = this.cellsPerSlot;
    const stamps = [...data.stamps];
    const cells = new Array<number>(data.cells.length).fill(0);
    for (let l = 0; l < this.levelCount; l++) {
      const slots = this.levelSlots[l];
      const base = this.fileLevelOffset[l];
      const by = Math.round(offsetMs / this.resolutionMs[l]);
      // a ring never written stays so; anything not a number stays as it is, for fromFileLayout to refuse
      if (typeof stamps[l] === "number" && stamps[l] !== FILE_EMPTY) stamps[l] -= by;
      for (let p = 0; p < slots; p++) {
        const src = base + p * cps;
        const dst = base + mod(p - by, slots) * cps;
        for (let c = 0; c < cps; c++) cells[dst + c] = data.cells[src + c];
      }
    }
    return { stamps, cells };
  }

  /** The whole store as bytes: magic, header, chunks, checksum (format SCAW1). */
  serialize(): Uint8Array {
    return runAtOnce(this.serializeSteps());
  }

  /**
   * serialize() a step at a time, for a caller that must not hold its thread
   * for the whole store (an agent's event loop: 100,000 segments take about
   * a second). Each next() does about `segmentsPerStep` segments' worth of
   * work; the generator returns the bytes serializeStream gives, in one
   * buffer.
   */
  *serializeSteps(segmentsPerStep = 256): Generator<void, Uint8Array, void> {
    const { length, pieces } = this.serializeStream(segmentsPerStep);
    const out = new Uint8Array(length);
    let off = 0;
    for (const piece of pieces) {
      if (piece === undefined) yield;
      else {
        out.set(piece, off);
        off += piece.length;
      }
    }
    return out;
  }

  /**
   * serialize() as a stream, for a writer that must hold neither its thread
   * nor the whole form in memory (an agent answering a collector, or saving
   * its windows: 2.4 MB per 1,024 segments with windows, 234 MB for 100,000).
   * `length` is the whole form's byte length, known at once; `pieces` yields
   * the bytes in order (the magic and header, then each chunk of 1,024
   * segments as a buffer of its own, then the checksum), and undefined after
   * each step of about `segmentsPerStep` segments' worth of work. Events
   * recorded between steps are in the segments not yet laid out and not in
   * those before (each segment is as it was at its step, every stamp no later
   * than the last step); a chunk of segments first touched after the call is
   * left out, as if the store had been written a moment earlier.
   */
  serializeStream(segmentsPerStep = 256): {
    length: number;
    pieces: Generator<Uint8Array | undefined, void, void>;
  } {
    if (!(Number.isInteger(segmentsPerStep) && segmentsPerStep >= 1)) {
      throw new UsageError(`segmentsPerStep must be a positive integer, got ${segmentsPerStep}`);
    }
    this.flush();
    const present: number[] = [];
    this.hot.forEach((c, i) => c && present.push(i));
    const header = new TextEncoder().encode(
      JSON.stringify({
        segmentCount: this.segmentCount,
        zones: this.zones,
        levels: this.levels,
        chunks: present,
      }),
    );
    const nl = this.levelCount;
    const perSegment = this.slotsPerSegment * this.cellsPerSlot;
    const stampBytes = CHUNK * nl * 8;
    const chunkBytes = stampBytes + CHUNK * perSegment * 4;
    const length = 9 + header.length + present.length * chunkBytes + 16;
    // the checksum of a step's worth of segments' bytes at a time
    const sumStep = segmentsPerStep * (nl * 8 + perSegment * 4);
    const pieces = function* (this: AccessWindows): Generator<Uint8Array | undefined, void, void> {
      const head = new Uint8Array(9 + header.length);
      head.set(new TextEncoder().encode(MAGIC), 0);
      new DataView(head.buffer).setUint32(5, header.length, true);
      head.set(header, 9);
      const sum = new Fnv1a64().update(head);
      yield head;
      let work = 0;
      for (const ci of present) {
        // a buffer per chunk: the caller may still hold the one before (a socket's queue)
        const bytes = new Uint8Array(chunkBytes);
        const stamps = new Float64Array(bytes.buffer, 0, CHUNK * nl);
        const cells = new Uint32Array(bytes.buffer, stampBytes, CHUNK * perSegment);
        for (let local = 0; local < CHUNK; local++) {
          if (work === segmentsPerStep) {
            yield;
            work = 0;
            this.flush(); // events queued meanwhile belong in the segments still to lay out
          }
          this.toFileLayout(ci, local, stamps, local * nl, cells, local * perSegment);
          work++;
        }
        for (let p = 0; p < chunkBytes; p += sumStep) {
          yield;
          sum.update(bytes.subarray(p, Math.min(chunkBytes, p + sumStep)));
        }
        yield bytes;
        this.flush();
        work = 0;
      }
      yield new TextEncoder().encode(sum.hex());
    }.bind(this);
    return { length, pieces: pieces() };
  }

  /**
   * Reads the serialized form (SCAW1) as it arrives, a piece at a time, into
   * this store: each segment that has windows there, and that `keep` accepts,
   * replaces that segment's windows here (moved by `clockOffsetMs` as
   * importSegment does); segments without windows there are left as they
   * are. The other store must count as many segments, the same zones and
   * levels. push() takes the pieces in order (each next() of its generator
   * reads about `segmentsPerStep` segments); finish() checks that the form
   * ended where its header says and that its checksum holds, and returns how
   * many segments were read into this store. A form that is cut short,
   * altered or of other windows throws from push() or finish() — possibly
   * after some segments were already replaced, so a caller that needs all or
   * nothing reads into a store of its own and drops it then.
   */
  importStream(
    opts: { keep?: (segment: number) => boolean; clockOffsetMs?: number; segmentsPerStep?: number } = {},
  ): { push(piece: Uint8Array): Generator<void, void, void>; finish(): number } {
    const keep = opts.keep ?? (() => true);
    const offset = opts.clockOffsetMs ?? 0;
    const segmentsPerStep = opts.segmentsPerStep ?? 256;
    if (!Number.isFinite(offset)) {
      throw new UsageError(`a clock offset must be a finite number of milliseconds, got ${offset}`);
    }
    if (!(Number.isInteger(segmentsPerStep) && segmentsPerStep >= 1)) {
      throw new UsageError(`segmentsPerStep must be a positive integer, got ${segmentsPerStep}`);
    }
    const corrupt = (why: string) => new UsageError(`access windows stream is corrupt: ${why}`);
    const nl = this.levelCount;
    const perSegment = this.slotsPerSegment * this.cellsPerSlot;
    const stampBytes = CHUNK * nl * 8;
    const chunkBytes = stampBytes + CHUNK * perSegment * 4;
    const sum = new Fnv1a64();
    /** Bytes of the part being collected (the magic and header length, the header, a chunk, the checksum). */
    let part = new Uint8Array(9);
    let filled = 0;
    let stage: "start" | "header" | "chunks" | "checksum" | "done" = "start";
    let chunks: number[] = [];
    let next = 0;
    let imported = 0;
    let work = 0;
    /** Reads the segments of chunk ci from `part` (a whole chunk). */
    const readChunk = function* (this: AccessWindows, ci: number): Generator<void, void, void> {
      const stamps = new Float64Array(part.buffer, 0, CHUNK * nl);
      const cells = new Uint32Array(part.buffer, stampBytes, CHUNK * perSegment);
      const end = Math.min(this.segmentCount, (ci + 1) * CHUNK);
      for (let seg = ci * CHUNK; seg < end; seg++) {
        if (++work % segmentsPerStep === 0) yield;
        const local = seg & CHUNK_MASK;
        const so = local * nl;
        let written = false;
        for (let l = 0; l < nl; l++) if (stamps[so + l] !== FILE_EMPTY) written = true;
        if (!written || !keep(seg)) continue;
        const co = local * perSegment;
        this.flush();
        if (offset === 0) this.fromFileLayout(seg, stamps, so, cells, co, corrupt);
        else {
          for (let l = 0; l < nl; l++) stampFromFile(stamps[so + l], corrupt);
          const shifted = this.shiftFileLayout(
            {
              stamps: Array.from(stamps.subarray(so, so + nl)),
              cells: Array.from(cells.subarray(co, co + perSegment)),
            },
            offset,
          );
          this.fromFileLayout(seg, shifted.stamps, 0, shifted.cells, 0, corrupt);
        }
        imported++;
      }
    }.bind(this);
    /** The part is whole: checks or reads it, and sets up the next one. */
    const partDone = function* (this: AccessWindows): Generator<void, void, void> {
      if (stage === "start") {
        if (new TextDecoder().decode(part.subarray(0, 5)) !== MAGIC) throw corrupt("bad magic");
        const hlen = new DataView(part.buffer).getUint32(5, true);
        if (hlen > 1 << 24) throw corrupt("header length out of range");
        sum.update(part);
        stage = "header";
        part = new Uint8Array(hlen);
      } else if (stage === "header") {
        sum.update(part);
        let header: { segmentCount: number; zones: string[]; levels: WindowLevel[]; chunks: number[] };
        try {
          header = JSON.parse(new TextDecoder().decode(part));
        } catch {
          throw corrupt("header is not JSON");
        }
        if (typeof header !== "object" || header === null || !Array.isArray(header.chunks)) {
          throw corrupt("header has no chunk list");
        }
        if (
          header.segmentCount !== this.segmentCount ||
          !Array.isArray(header.zones) ||
          header.zones.join(",") !== this.zones.join(",") ||
          JSON.stringify(header.levels) !== JSON.stringify(this.levels)
        ) {
          throw new UsageError(
            `the windows are of ${String(header.segmentCount)} segments with zones ${Array.isArray(header.zones) ? header.zones.join(",") : "?"}, not ${this.segmentCount} with zones ${this.zones.join(",")} and these levels`,
          );
        }
        let prev = -1;
        for (const ci of header.chunks) {
          if (!Number.isInteger(ci) || ci <= prev || ci >= this.hot.length)
            throw corrupt("chunk index out of range or out of order");
          prev = ci;
        }
        chunks = header.chunks;
        stage = chunks.length ? "chunks" : "checksum";
        part = new Uint8Array(chunks.length ? chunkBytes : 16);
      } else if (stage === "chunks") {
        for (let p = 0; p < chunkBytes; p += SUM_PIECE) {
          sum.update(part.subarray(p, Math.min(chunkBytes, p + SUM_PIECE)));
          yield;
        }
        yield* readChunk(chunks[next++]);
        if (next === chunks.length) {
          stage = "checksum";
          part = new Uint8Array(16);
        }
      } else if (stage === "checksum") {
        if (new TextDecoder().decode(part) !== sum.hex()) throw corrupt("checksum mismatch");
        stage = "done";
      }
      filled = 0;
    }.bind(this);
    return {
      *push(piece: Uint8Array): Generator<void, void, void> {
        let at = 0;
        while (at < piece.length) {
          if (stage === "done") throw corrupt("bytes after the checksum");
          const n = Math.min(part.length - filled, piece.length - at);
          part.set(piece.subarray(at, at + n), filled);
          filled += n;
          at += n;
          if (filled === part.length) yield* partDone();
        }
        // (an empty header completes without a byte of its own)
        while (stage === "header" && part.length === 0) yield* partDone();
      },
      finish(): number {
        if (stage !== "done") throw corrupt(`cut short (in the ${stage === "start" ? "magic" : stage})`);
        return imported;
      },
    };
  }

  /** Reads bytes written by serialize(); a truncated or altered buffer is refused. */
  static deserialize(bytes: Uint8Array): AccessWindows {
    return runAtOnce(AccessWindows.deserializeSteps(bytes));
  }

  /**
   * deserialize() a step at a time (a collector reading a node's windows
   * between its other work): each next() checksums half a MiB, or reads
   * `segmentsPerStep` segments; the generator returns the windows.
   */
  static *deserializeSteps(bytes: Uint8Array, segmentsPerStep = 256): Generator<void, AccessWindows, void> {
    if (!(Number.isInteger(segmentsPerStep) && segmentsPerStep >= 1)) {
      throw new UsageError(`segmentsPerStep must be a positive integer, got ${segmentsPerStep}`);
    }
    const corrupt = (why: string) => new UsageError(`access windows file is corrupt: ${why}`);
    if (bytes.length < 9 + 16 || new TextDecoder().decode(bytes.subarray(0, 5)) !== MAGIC) {
      throw corrupt("bad magic or too short");
    }
    const bodyLen = bytes.length - 16;
    const sum = new Fnv1a64();
    for (let p = 0; p < bodyLen; p += SUM_PIECE) {
      if (p > 0) yield;
      sum.update(bytes.subarray(p, Math.min(bodyLen, p + SUM_PIECE)));
    }
    if (new TextDecoder().decode(bytes.subarray(bodyLen)) !== sum.hex()) throw corrupt("checksum mismatch");
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const hlen = view.getUint32(5, true);
    if (9 + hlen > bodyLen) throw corrupt("header length out of range");
    let header: { segmentCount: number; zones: string[]; levels: WindowLevel[]; chunks: number[] };
    try {
      header = JSON.parse(new TextDecoder().decode(bytes.subarray(9, 9 + hlen)));
    } catch {
      throw corrupt("header is not JSON");
    }
    if (typeof header !== "object" || header === null || !Array.isArray(header.chunks)) {
      throw corrupt("header has no chunk list");
    }
    let w: AccessWindows;
    try {
      w = new AccessWindows({
        segmentCount: header.segmentCount,
        zones: header.zones,
        levels: header.levels,
      });
    } catch (err) {
      throw corrupt(`header: ${(err as Error).message}`);
    }
    const nl = w.levelCount;
    const perSegment = w.slotsPerSegment * w.cellsPerSlot;
    const stampBytes = CHUNK * nl * 8;
    const cellBytes = CHUNK * perSegment * 4;
    let off = 9 + hlen;
    if (off + header.chunks.length * (stampBytes + cellBytes) !== bodyLen) throw corrupt("length mismatch");
    let read = 0;
    for (const ci of header.chunks) {
      if (!Number.isInteger(ci) || ci < 0 || ci >= w.hot.length) throw corrupt("chunk index out of range");
      // copies: the typed arrays need aligned offsets, the file gives none
      const stamps = new Float64Array(Uint8Array.prototype.slice.call(bytes, off, off + stampBytes).buffer);
      off += stampBytes;
      const cells = new Uint32Array(Uint8Array.prototype.slice.call(bytes, off, off + cellBytes).buffer);
      off += cellBytes;
      const end = Math.min(w.segmentCount, (ci + 1) * CHUNK);
      w.allocate(ci);
      for (let s = ci * CHUNK; s < end; s++) {
        if (++read % segmentsPerStep === 0) yield;
        const local = s & CHUNK_MASK;
        w.fromFileLayout(s, stamps, local * nl, cells, local * perSegment, corrupt);
      }
    }
    return w;
  }
}

interface WindowSpan {
  level: number;
  from: number;
  to: number;
  fromWeight: number;
  durationMs: number;
}

/** a[i] += n, saturating at MAX_CELL. */
function addCell(a: Uint32Array, i: number, n: number): void {
  const v = a[i] + n;
  a[i] = v > MAX_CELL ? MAX_CELL : v;
}

/** One segment's windows as plain data (moves with its shard). */
export interface SegmentWindows {
  segment: number;
  zones: string[];
  levels: WindowLevel[];
  stamps: number[];
  cells: number[];
}
