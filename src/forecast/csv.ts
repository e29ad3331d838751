/**
 * Reading a `timestamp,value` CSV (the text, not the file: this module is
 * pure) onto a regular grid. Real exports are messy, so the parser repairs
 * what it safely can — sorts, averages duplicates, interpolates gaps — and
 * reports every repair in `notes`; what it cannot repair is a UsageError
 * naming the line.
 */
import { UsageError } from "../errors.js";
import { median } from "./stats.js";

export interface ParsedSeries {
  values: Float64Array;
  /** Median spacing of the timestamps, in seconds. */
  intervalSeconds: number;
  /** Epoch milliseconds of values[0]. */
  startMs: number;
  /** Rows read (before any repair). */
  rows: number;
  filled: number;
  duplicates: number;
  unsorted: boolean;
  allZero: boolean;
  notes: string[];
}

export interface ParseOptions {
  /** Fewest points accepted after regularisation (default 8). */
  minPoints?: number;
  /** Refuse grids larger than this many slots (default 5,000,000): protects against a stray timestamp. */
  maxPoints?: number;
}

const ISO_DATE = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$/i;
const NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i;

/**
 * Largest magnitude a value may have. Sums and squares of larger ones overflow
 * to Infinity in the models and the error measures (±1e308 scored every model
 * a perfect 0); 1e15 is beyond any count or rate and still exact as an integer.
 */
export const MAX_VALUE = 1e15;

/** The range of a JavaScript Date (±100,000,000 days from 1970): beyond it there is no date, only a number. */
const MAX_EPOCH_MS = 8.64e15;

/** Whether year-month-day names a day of the calendar (Date.parse rolls 2024-02-30 over to March 1). */
export function isCalendarDate(isoDate: string): boolean {
  const [y, m, d] = isoDate.slice(0, 10).split("-").map(Number);
  const date = new Date(Date.UTC(2000, m - 1, d));
  date.setUTCFullYear(y);
  return date.getUTCMonth() === m - 1 && date.getUTCDate() === d;
}

/** Epoch seconds or milliseconds (values above 1e11 can only be ms: that many seconds is year 5138). */
export function parseTimestamp(raw: string): number | undefined {
  const s = raw.trim().replace(/^"(.*)"$/, "$1");
  if (NUMBER.test(s)) {
    const v = Number(s);
    const ms = Math.abs(v) > 1e11 ? v : v * 1000;
    return Number.isFinite(ms) && Math.abs(ms) <= MAX_EPOCH_MS ? ms : undefined;
  }
  const match = ISO_DATE.exec(s);
  if (!match || !isCalendarDate(s)) return undefined;
  // a timestamp without a zone is read as UTC, so results do not depend on the machine's TZ
  let iso = s.replace(" ", "T");
  if (!match[1]) iso += iso.length === 10 ? "T00:00:00Z" : "Z";
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? ms : undefined;
}

function looksBinary(text: string): boolean {
  const sample = text.slice(0, 4096);
  let control = 0;
  for (let i = 0; i < sample.length; i++) {
    const c = sample.charCodeAt(i);
    if (c === 0) return true;
    if ((c < 32 && c !== 9 && c !== 10 && c !== 13) || c === 0xfffd) control++;
  }
  return control > sample.length * 0.05;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** Splits one CSV line; supports "quoted, fields" with "" as an escaped quote. Returns undefined if a quote is unbalanced. */
export function splitCsvLine(line: string): string[] | undefined {
  if (!line.includes('"')) return line.split(",");
  const out: string[] = [];
  let cur = "";
  let i = 0;
  let quoted = false;
  while (i < line.length) {
    const c = line[i];
    if (quoted) {
      if (c === '"') {
        if (line[i + 1] === '"') {
          cur += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i++;
        continue;
      }
      cur += c;
      i++;
      continue;
    }
    if (c === '"' && cur === "") {
      quoted = true;
      i++;
      continue;
    }
    if (c === ",") {
      out.push(cur);
      cur = "";
      i++;
      continue;
    }
    cur += c;
    i++;
  }
  if (quoted) return undefined;
  out.push(cur);
  return out;
}

/** A series longer than a backtest reads. */
function tooManyPoints(what: string, maxPoints: number): UsageError {
  return new UsageError(`the series is too long: ${what}; at most ${maxPoints} points are read`, {
    hint: "give it at a coarser interval (sum or average the rows per minute, hour or day), or only its recent part",
  });
}

export function parseSeriesCsv(text: string, opts: ParseOptions = {}): ParsedSeries {
  const minPoints = opts.minPoints ?? 8;
  const maxPoints = opts.maxPoints ?? 5_000_000;
  const hint = "expected a CSV with a header and rows of `timestamp,value` (ISO-8601 or epoch seconds/ms)";
  if (text.trim().length === 0) throw new UsageError("the input is empty", { hint });
  if (looksBinary(text)) throw new UsageError("the input is not a text CSV (binary content)", { hint });

  const lines = text.replace(/^\uFEFF/, "").split(/\r\n|\n|\r/);
  const points: { t: number; v: number }[] = [];
  let headerSeen = false;
  const notes: string[] = [];
  let extraColumns = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    const lineNo = i + 1;
    if (line === "" || line.startsWith("#")) continue;
    const fields = splitCsvLine(line);
    if (!fields)
      throw new UsageError(`line ${lineNo}: a quote is not closed: "${line.slice(0, 60)}"`, { hint });
    const t = parseTimestamp(fields[0] ?? "");
    if (!headerSeen && points.length === 0) {
      headerSeen = true;
      // the header row: a first line whose timestamp does not parse, unless its value is a number
      // (then it is a data row with a bad timestamp, reported below rather than dropped)
      const value = (fields[1] ?? "")
        .trim()
        .replace(/^"(.*)"$/, "$1")
        .trim();
      if (t === undefined && !(value !== "" && Number.isFinite(Number(value)))) continue;
      if (t !== undefined) notes.push("no header row: the first line was read as data");
    }
    if (fields.length < 2) {
      throw new UsageError(
        `line ${lineNo}: expected two columns "timestamp,value", found "${line.slice(0, 60)}"`,
        { hint },
      );
    }
    if (t === undefined) {
      throw new UsageError(`line ${lineNo}: cannot read the timestamp "${fields[0].slice(0, 40)}"`, { hint });
    }
    const raw = fields[1].trim().replace(/^"(.*)"$/, "$1");
    const v = NUMBER.test(raw) ? Number(raw) : NaN;
    if (!Number.isFinite(v)) {
      throw new UsageError(`line ${lineNo}: the value "${raw.slice(0, 40)}" is not a number`, { hint });
    }
    if (Math.abs(v) > MAX_VALUE) {
      throw new UsageError(
        `line ${lineNo}: the value "${raw.slice(0, 40)}" is out of range: at most ${MAX_VALUE} in magnitude`,
        { hint: "scale the series down (e.g. thousands instead of units): forecasts scale with it" },
      );
    }
    if (fields.length > 2) extraColumns++;
    points.push({ t, v });
    // refused as soon as it is known, not after the whole file was read into rows (GBs)
    if (points.length > maxPoints) throw tooManyPoints(`more than ${maxPoints} rows of data`, maxPoints);
  }
  if (extraColumns)
    notes.push(
      `${plural(extraColumns, "row")} had more than two columns: only the first two (timestamp, value) were read`,
    );
  if (points.length < minPoints) {
    throw new UsageError(
      `too few points: ${points.length} row${points.length === 1 ? "" : "s"} of data, at least ${minPoints} are needed`,
      { hint },
    );
  }

  const rows = points.length;
  let unsorted = false;
  for (let i = 1; i < points.length; i++) if (points[i].t < points[i - 1].t) unsorted = true;
  if (unsorted) {
    points.sort((a, b) => a.t - b.t);
    notes.push("timestamps were not in order: sorted");
  }

  // average rows that share a timestamp
  const merged: { t: number; v: number }[] = [];
  let duplicates = 0;
  for (let i = 0; i < points.length;) {
    let j = i;
    let sum = 0;
    while (j < points.length && points[j].t === points[i].t) sum += points[j++].v;
    if (j - i > 1) duplicates += j - i - 1;
    merged.push({ t: points[i].t, v: sum / (j - i) });
    i = j;
  }
  if (duplicates) notes.push(`${plural(duplicates, "duplicate timestamp")} averaged`);
  if (merged.length < minPoints) {
    throw new UsageError(`too few distinct timestamps: ${merged.length}, at least ${minPoints} are needed`, {
      hint,
    });
  }

  const diffs = new Float64Array(merged.length - 1);
  for (let i = 1; i < merged.length; i++) diffs[i - 1] = merged[i].t - merged[i - 1].t;
  const intervalMs = median(diffs);
  const t0 = merged[0].t;
  const slots = Math.round((merged[merged.length - 1].t - t0) / intervalMs) + 1;
  if (slots > maxPoints && slots <= 100 * merged.length)
    throw tooManyPoints(`${slots} points at its spacing of ${intervalMs / 1000}s`, maxPoints);
  if (slots > maxPoints || slots > 100 * merged.length) {
    throw new UsageError(
      `timestamps too irregular: the median spacing is ${intervalMs / 1000}s but they span ${slots} such intervals`,
      { hint: "check for a stray timestamp (wrong year, or seconds mixed with milliseconds)" },
    );
  }
  // more grid than data: the series would be mostly straight lines drawn by the gap filling, and a
  // backtest would score the models on them (a line is forecast perfectly)
  if (slots > 2 * merged.length) {
    throw new UsageError(
      `timestamps too sparse: at their median spacing of ${intervalMs / 1000}s they span ${slots} intervals, and only ${merged.length} have a value, so more than half of the series would be filled by interpolation`,
      {
        hint: "check for a stray timestamp (wrong year, or seconds mixed with milliseconds), or give the series at a coarser regular interval",
      },
    );
  }

  // place each point on the nearest grid slot; several in one slot are averaged
  const sum = new Float64Array(slots);
  const count = new Uint32Array(slots);
  let moved = 0;
  for (const p of merged) {
    const k = Math.round((p.t - t0) / intervalMs);
    if (p.t !== t0 + k * intervalMs) moved++;
    sum[k] += p.v;
    count[k]++;
  }
  if (moved) notes.push(`${plural(moved, "point")} off the regular grid moved to the nearest slot`);
  let offGrid = 0;
  for (let k = 0; k < slots; k++) if (count[k] > 1) offGrid += count[k] - 1;
  if (offGrid)
    notes.push(`${plural(offGrid, "point")} sharing a slot of the grid with another averaged into it`);

  const values = new Float64Array(slots);
  let filled = 0;
  let prev = -1;
  for (let k = 0; k < slots; k++) {
    if (count[k] === 0) continue;
    values[k] = sum[k] / count[k];
    if (prev >= 0 && k - prev > 1) {
      // linear interpolation across the gap
      for (let g = prev + 1; g < k; g++) {
        values[g] = values[prev] + ((values[k] - values[prev]) * (g - prev)) / (k - prev);
        filled++;
      }
    }
    prev = k;
  }
  if (filled) notes.push(`${plural(filled, "missing point")} filled by linear interpolation`);
  let allZero = true;
  for (let k = 0; k < slots; k++) if (values[k] !== 0) allZero = false;
  if (allZero) notes.push("every value is zero: all models forecast zero");
  return {
    values,
    intervalSeconds: intervalMs / 1000,
    startMs: t0,
    rows,
    filled,
    duplicates,
    unsorted,
    allZero,
    notes,
  };
}
