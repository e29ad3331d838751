/**
 * Turns a heat history (per segment, per time column) into the rows the
 * heatmap draws: either bands of consecutive segments or one row per shard.
 *
 * Aggregation: a band's cell is the MAX over its segments of the per-segment
 * rate (reads and writes separately), so one hot segment among 2,500 cold
 * ones still lights its band; a shard's cell is the SUM over its segments
 * (a shard's load is what its node serves). Pure and allocation-light: it
 * runs on every refresh with 100,000 segments.
 */
import type { ShardInfo } from "../engine/location-map.js";
import type { HeatHistory } from "./source.js";

export type HeatView = "segments" | "shards";

export interface HeatRow {
  /** "0-2499", "shard-7", or a single segment "4711". */
  label: string;
  /** The segments the row covers (for bands: a contiguous slice of `segments`). */
  firstSegment: number;
  lastSegment: number;
  segmentCount: number;
  /** The shard of a shard row (undefined for bands). */
  shard?: string;
  /** Per visible column, oldest first; -1 where the history has no column yet. */
  reads: Float32Array;
  writes: Float32Array;
  /** Highest reads+writes of any cell in the row (for a band: of any one segment). */
  peak: number;
  /** The segment with the highest total over the visible columns (the row's focus). */
  hottestSegment: number;
}

export interface HeatGrid {
  view: HeatView;
  rows: HeatRow[];
  /** Rows before the first shown one (shard rows scroll; bands always fit). */
  offset: number;
  /** The selected row (absolute) the grid was scrolled for; -1 when the caller selects. */
  selected: number;
  /** The row (absolute) with the highest peak over all rows, -1 when nothing was accessed. */
  hottestIndex: number;
  totalRows: number;
  columns: number;
  intervalSeconds: number;
  /** Scale maximum: the highest cell of reads or writes in the grid (accesses/s). */
  maxRate: number;
  /** Segments per band (1 when every segment has its row). */
  bandSize: number;
  aggregation: "max" | "sum";
}

export interface GridRequest {
  rows: number;
  columns: number;
  /** Segments considered, ascending (all of them, or one shard's). */
  segments?: Int32Array;
}

/** The newest `columns` history columns, left-padded with empty ones. */
function visibleColumns(
  heat: HeatHistory,
  columns: number,
): { reads?: Float32Array; writes?: Float32Array }[] {
  const out: { reads?: Float32Array; writes?: Float32Array }[] = new Array(columns);
  const n = heat.reads.length;
  for (let c = 0; c < columns; c++) {
    const k = n - columns + c;
    out[c] = k >= 0 ? { reads: heat.reads[k], writes: heat.writes[k] } : {};
  }
  return out;
}

export function allSegments(count: number): Int32Array {
  const a = new Int32Array(count);
  for (let i = 0; i < count; i++) a[i] = i;
  return a;
}

export function segmentsOfShard(shard: ShardInfo): Int32Array {
  let n = 0;
  for (const [a, b] of shard.ranges) n += b - a;
  const out = new Int32Array(n);
  let i = 0;
  for (const [a, b] of shard.ranges) for (let s = a; s < b; s++) out[i++] = s;
  return out;
}

/**
 * One column aggregated over groups of segments. A history column never
 * changes once taken, so its aggregate is computed once and cached on the
 * column's array: a refresh then costs one new column (O(segments)), not
 * the whole history (O(segments × columns)).
 */
interface ColumnAggregate {
  writesColumn: Float32Array;
  reads: Float32Array;
  writes: Float32Array;
  /** max (bands) or sum (shards) of reads+writes. */
  total: Float32Array;
  /** The segment with the highest reads+writes in the group in this column. */
  argmax: Int32Array;
  maxReads: number;
  maxWrites: number;
}

const aggregateCache = new WeakMap<Float32Array, Map<string, ColumnAggregate>>();

interface Grouping {
  key: string;
  groups: number;
  op: "max" | "sum";
  /** Calls visit(group, segment) for every segment of every group. */
  forEach(visit: (group: number, segment: number) => void): void;
  /** Fast path for contiguous bands: group i is segments[i*size, (i+1)*size). */
  bands?: { segments: Int32Array; size: number };
}

function aggregateColumn(reads: Float32Array, writes: Float32Array, g: Grouping): ColumnAggregate {
  let byKey = aggregateCache.get(reads);
  const hit = byKey?.get(g.key);
  if (hit && hit.writesColumn === writes) return hit;
  const agg: ColumnAggregate = {
    writesColumn: writes,
    reads: new Float32Array(g.groups),
    writes: new Float32Array(g.groups),
    total: new Float32Array(g.groups),
    argmax: new Int32Array(g.groups).fill(-1),
    maxReads: 0,
    maxWrites: 0,
  };
  const best = new Float32Array(g.groups).fill(-1);
  if (g.bands) {
    const { segments, size } = g.bands;
    for (let b = 0; b < g.groups; b++) {
      const to = Math.min(segments.length, (b + 1) * size);
      let mr = 0;
      let mw = 0;
      let mt = -1;
      let arg = segments[b * size];
      for (let i = b * size; i < to; i++) {
        const s = segments[i];
        const rv = reads[s];
        const wv = writes[s];
        if (rv > mr) mr = rv;
        if (wv > mw) mw = wv;
        if (rv + wv > mt) {
          mt = rv + wv;
          arg = s;
        }
      }
      agg.reads[b] = mr;
      agg.writes[b] = mw;
      agg.total[b] = Math.max(0, mt);
      agg.argmax[b] = arg;
    }
  } else {
    const sum = g.op === "sum";
    g.forEach((grp, s) => {
      const rv = reads[s];
      const wv = writes[s];
      if (sum) {
        agg.reads[grp] += rv;
        agg.writes[grp] += wv;
        agg.total[grp] += rv + wv;
      } else {
        if (rv > agg.reads[grp]) agg.reads[grp] = rv;
        if (wv > agg.writes[grp]) agg.writes[grp] = wv;
        if (rv + wv > agg.total[grp]) agg.total[grp] = rv + wv;
      }
      if (rv + wv > best[grp]) {
        best[grp] = rv + wv;
        agg.argmax[grp] = s;
      }
    });
  }
  for (let i = 0; i < g.groups; i++) {
    if (agg.reads[i] > agg.maxReads) agg.maxReads = agg.reads[i];
    if (agg.writes[i] > agg.maxWrites) agg.maxWrites = agg.writes[i];
  }
  if (!byKey) {
    byKey = new Map();
    aggregateCache.set(reads, byKey);
  }
  byKey.set(g.key, agg);
  return agg;
}

interface RowMeta {
  label: string;
  firstSegment: number;
  lastSegment: number;
  segmentCount: number;
  shard?: string;
  /** Used when the row saw no access at all. */
  defaultSegment: number;
}

/**
 * Rows for the groups in [from, to) (only the visible ones are built: a
 * row allocates, and there may be thousands of shards), the scale over all
 * groups, and the group with the highest peak.
 */
function buildRows(
  heat: HeatHistory,
  columns: number,
  g: Grouping,
  meta: (group: number) => RowMeta,
  range: (hottestGroup: number) => [number, number],
) {
  const cols = visibleColumns(heat, Math.max(1, columns));
  const aggs = cols.map((c) => (c.reads && c.writes ? aggregateColumn(c.reads, c.writes, g) : undefined));
  let maxRate = 0;
  let hottestGroup = -1;
  let hottestPeak = 0;
  for (const a of aggs) {
    if (!a) continue;
    if (a.maxReads > maxRate) maxRate = a.maxReads;
    if (a.maxWrites > maxRate) maxRate = a.maxWrites;
  }
  for (let grp = 0; grp < g.groups; grp++) {
    for (const a of aggs) {
      if (a && a.total[grp] > hottestPeak) {
        hottestPeak = a.total[grp];
        hottestGroup = grp;
      }
    }
  }
  const [from, to] = range(hottestGroup);
  const rows: HeatRow[] = [];
  for (let grp = from; grp < to; grp++) {
    const reads = new Float32Array(cols.length);
    const writes = new Float32Array(cols.length);
    let peak = 0;
    const m = meta(grp);
    let hottest = m.defaultSegment;
    for (let c = 0; c < cols.length; c++) {
      const a = aggs[c];
      if (!a) {
        reads[c] = -1;
        writes[c] = -1;
        continue;
      }
      reads[c] = a.reads[grp];
      writes[c] = a.writes[grp];
      // the row's focus: the segment behind its peak cell (the newest one on a tie)
      if (a.total[grp] > 0 && a.total[grp] >= peak) {
        peak = a.total[grp];
        if (a.argmax[grp] >= 0) hottest = a.argmax[grp];
      }
    }
    rows.push({ ...m, reads, writes, peak, hottestSegment: hottest });
  }
  return { rows, maxRate, columns: cols.length, hottestGroup, from };
}

const shardListIds = new WeakMap<readonly ShardInfo[], number>();
let nextShardListId = 1;

/** Bands of consecutive segments, as many as fit in `rows`; each cell the max over the band. */
export function segmentGrid(heat: HeatHistory, req: GridRequest): HeatGrid {
  const segments = req.segments ?? allSegments(heat.segmentCount);
  const rowsWanted = Math.max(1, Math.min(req.rows, segments.length));
  const bandSize = Math.max(1, Math.ceil(segments.length / rowsWanted));
  const nRows = Math.max(1, Math.ceil(segments.length / bandSize));
  const segKey = req.segments
    ? `${segments.length}:${segments[0]}:${segments[segments.length - 1]}:${hashSegments(segments)}`
    : `all:${segments.length}`;
  const g: Grouping = {
    key: `band:${bandSize}:${segKey}`,
    groups: nRows,
    op: "max",
    forEach: () => {},
    bands: { segments, size: bandSize },
  };
  const { rows, maxRate, columns, hottestGroup } = buildRows(
    heat,
    req.columns,
    g,
    (r) => {
      const from = r * bandSize;
      const to = Math.min(segments.length, from + bandSize);
      const first = segments[from];
      const last = segments[to - 1];
      return {
        label: first === last ? String(first) : `${first}-${last}`,
        firstSegment: first,
        lastSegment: last,
        segmentCount: to - from,
        defaultSegment: first,
      };
    },
    () => [0, nRows],
  );
  return {
    view: "segments",
    rows,
    offset: 0,
    selected: -1,
    hottestIndex: hottestGroup,
    totalRows: rows.length,
    columns,
    intervalSeconds: heat.intervalSeconds,
    maxRate,
    bandSize,
    aggregation: "max",
  };
}

function hashSegments(segments: Int32Array): number {
  let h = 2166136261;
  for (let i = 0; i < segments.length; i++) h = Math.imul(h ^ segments[i], 16777619);
  return h >>> 0;
}

/**
 * One row per shard (sum over its segments), scrolled so that `selected`
 * is visible; the scale covers every shard, not only the visible ones.
 */
export function shardGrid(
  heat: HeatHistory,
  shards: readonly ShardInfo[],
  req: { rows: number; columns: number; selected: number },
): HeatGrid {
  let listId = shardListIds.get(shards);
  if (listId === undefined) {
    listId = nextShardListId++;
    shardListIds.set(shards, listId);
  }
  const g: Grouping = {
    key: `shards:${listId}`,
    groups: shards.length,
    op: "sum",
    forEach: (visit) => {
      shards.forEach((sh, i) => {
        for (const [a, b] of sh.ranges) for (let s = a; s < b; s++) visit(i, s);
      });
    },
  };
  const visible = Math.max(1, req.rows);
  let offset = 0;
  let selected = 0;
  const { rows, maxRate, columns, hottestGroup } = buildRows(
    heat,
    req.columns,
    g,
    (i) => {
      const sh = shards[i];
      const first = sh.ranges[0]?.[0] ?? 0;
      let count = 0;
      for (const [a, b] of sh.ranges) count += b - a;
      return {
        label: sh.id,
        shard: sh.id,
        firstSegment: first,
        lastSegment: (sh.ranges[sh.ranges.length - 1]?.[1] ?? 1) - 1,
        segmentCount: count,
        defaultSegment: first,
      };
    },
    (hottest) => {
      // no selection yet: open on the hottest shard
      selected = Math.max(
        0,
        Math.min(req.selected < 0 ? Math.max(0, hottest) : req.selected, shards.length - 1),
      );
      offset = Math.max(0, Math.min(selected - Math.floor(visible / 2), shards.length - visible));
      return [offset, Math.min(shards.length, offset + visible)];
    },
  );
  return {
    view: "shards",
    rows,
    offset,
    selected,
    hottestIndex: hottestGroup,
    totalRows: shards.length,
    columns,
    intervalSeconds: heat.intervalSeconds,
    maxRate,
    bandSize: 1,
    aggregation: "sum",
  };
}

/** The index of the row with the highest peak (-1 for an empty grid or one without any access). */
export function hottestRow(grid: HeatGrid): number {
  let best = -1;
  let bestPeak = 0;
  grid.rows.forEach((r, i) => {
    if (r.peak > bestPeak) [best, bestPeak] = [i, r.peak];
  });
  return best;
}

/** The band (row index) holding a segment, or -1. */
export function rowOfSegment(grid: HeatGrid, segment: number): number {
  return grid.rows.findIndex(
    (r) => r.shard === undefined && segment >= r.firstSegment && segment <= r.lastSegment,
  );
}
