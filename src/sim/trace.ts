/**
 * Workload traces: CSV `timestamp,key,op,zone`, one access per line, sorted
 * by time. Timestamps are ISO-8601 (a zone-less one is read as UTC) or epoch
 * milliseconds, from 2000-01-01 on (a smaller number is refused, not read as
 * seconds); op is `read` or `write`; zone must be one of the latency
 * matrix's zones. Pure: the caller reads the file and passes the text.
 *
 * Hostile input is refused whole (UsageError naming the line), never read
 * in part: a simulation over half a trace would report wrong figures.
 * Parsed into columns (typed arrays) so a replay allocates nothing per event.
 */
import { UsageError } from "../errors.js";
import { validateKey } from "../engine/segmenter.js";
import { isCalendarDate, splitCsvLine } from "../forecast/csv.js";

export { splitCsvLine };

export interface Trace {
  /** Zone names, indexed by `zone`. */
  zones: readonly string[];
  /** Distinct keys, indexed by `key`, in order of first appearance. */
  keys: string[];
  /** Epoch ms, non-decreasing. */
  t: Float64Array;
  key: Int32Array;
  write: Uint8Array;
  zone: Uint8Array;
  length: number;
}

export interface ParseTraceOptions {
  maxKeyBytes?: number;
  /** Names the input in messages. */
  source?: string;
  /** Refuse traces with more events than this (default 50,000,000). */
  maxEvents?: number;
}

const ISO = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}:?\d{2})?$/i;
const EPOCH_MS = /^\d{1,16}$/;
/** The latest time a JavaScript Date holds. */
const MAX_EPOCH_MS = 8.64e15;

/**
 * The earliest epoch-ms value a trace or request log may hold, 2000-01-01: a
 * number below it is epoch seconds or a counter read as ms (1500000000 s is
 * 2017, as ms 1970-01-18), so it is refused rather than guessed at.
 */
export const MIN_EPOCH_MS = Date.UTC(2000, 0, 1);

/** The key length traces are checked against (simulate's limits.maxKeyBytes). */
export const TRACE_MAX_KEY_BYTES = 1024;

/** Epoch ms from an ISO-8601 string or an integer of epoch milliseconds from 2000-01-01 on; undefined when it is neither. */
export function parseTraceTimestamp(raw: string): number | undefined {
  // beyond a Date's range (16 digits reach 1e16) a trace time cannot be written back as ISO-8601
  if (EPOCH_MS.test(raw)) {
    const ms = Number(raw);
    return ms >= MIN_EPOCH_MS && ms <= MAX_EPOCH_MS ? ms : undefined;
  }
  if (!ISO.test(raw) || !isCalendarDate(raw)) return undefined;
  let iso = raw.replace(" ", "T");
  if (iso.length === 10) iso += "T00:00:00Z";
  else if (!/(Z|[+-]\d{2}:?\d{2})$/i.test(iso)) iso += "Z";
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? ms : undefined;
}

/** Why a timestamp parseTraceTimestamp refused is refused, saying which unit a number is read in. */
export function badTimestampReason(raw: string): string {
  if (EPOCH_MS.test(raw) && Number(raw) < MIN_EPOCH_MS) {
    const asMs = new Date(Number(raw)).toISOString();
    return `bad timestamp ${raw}: a number is read as epoch milliseconds, and ${raw} ms is ${asMs}, before 2000-01-01 (epoch seconds? multiply by 1000, or give ISO-8601)`;
  }
  return `bad timestamp ${JSON.stringify(raw)} (ISO-8601, or epoch milliseconds from 2000-01-01 to 8.64e15)`;
}

/** Quotes a CSV field when it needs it. */
export function csvField(s: string): string {
  return /[",\r\n]/.test(s) || s !== s.trim() ? `"${s.replace(/"/g, '""')}"` : s;
}

export function parseTrace(text: string, zones: readonly string[], opts: ParseTraceOptions = {}): Trace {
  const source = opts.source ?? "the trace";
  const maxKeyBytes = opts.maxKeyBytes ?? TRACE_MAX_KEY_BYTES;
  const maxEvents = opts.maxEvents ?? 50_000_000;
  const hint =
    "each line is `timestamp,key,op,zone` (timestamp ISO-8601 or epoch ms from 2000-01-01, op read|write), sorted by time";
  const zoneIdx = new Map(zones.map((z, i) => [z, i]));
  if (zones.length > 255) throw new UsageError("at most 255 zones are supported");
  const lines = text.replace(/^\uFEFF/, "").split(/\r\n?|\n/);
  // Upper bound on events: allocate once, trim at the end.
  let cap = 0;
  for (const l of lines) if (l.trim() !== "") cap++;
  if (cap > maxEvents + 1) throw new UsageError(`${source} has more than ${maxEvents} lines`);
  const t = new Float64Array(cap);
  const key = new Int32Array(cap);
  const write = new Uint8Array(cap);
  const zone = new Uint8Array(cap);
  const keys: string[] = [];
  const keyIdx = new Map<string, number>();
  let n = 0;
  let prev = -Infinity;
  const fail = (lineNo: number, why: string): never => {
    throw new UsageError(`${source}, line ${lineNo}: ${why}`, { hint });
  };
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    if (raw.trim() === "") continue;
    const lineNo = i + 1;
    const f = splitCsvLine(raw);
    if (!f) fail(lineNo, "unbalanced quote");
    const fields = f!;
    if (n === 0 && keys.length === 0 && fields[0].trim().toLowerCase() === "timestamp") {
      const header = fields.map((x) => x.trim().toLowerCase()).join(",");
      if (header !== "timestamp,key,op,zone")
        fail(lineNo, `the header must be timestamp,key,op,zone, got ${header}`);
      continue;
    }
    if (fields.length !== 4) fail(lineNo, `expected 4 fields (timestamp,key,op,zone), got ${fields.length}`);
    const ts = parseTraceTimestamp(fields[0].trim());
    if (ts === undefined) fail(lineNo, badTimestampReason(fields[0].trim()));
    if (ts! < prev) {
      fail(
        lineNo,
        `timestamp ${fields[0].trim()} is earlier than the line before: the trace is not sorted by time`,
      );
    }
    prev = ts!;
    const k = fields[1];
    try {
      validateKey(k, maxKeyBytes);
    } catch (err) {
      fail(lineNo, (err as Error).message);
    }
    const op = fields[2].trim();
    if (op !== "read" && op !== "write") fail(lineNo, `op must be read or write, got ${JSON.stringify(op)}`);
    const z = zoneIdx.get(fields[3].trim());
    if (z === undefined) {
      fail(
        lineNo,
        `unknown zone ${JSON.stringify(fields[3].trim())}; the latency matrix has ${zones.join(", ")}`,
      );
    }
    let ki = keyIdx.get(k);
    if (ki === undefined) {
      ki = keys.length;
      keys.push(k);
      keyIdx.set(k, ki);
    }
    t[n] = ts!;
    key[n] = ki;
    write[n] = op === "write" ? 1 : 0;
    zone[n] = z!;
    n++;
  }
  if (n === 0) throw new UsageError(`${source} holds no events`, { hint });
  return {
    zones: [...zones],
    keys,
    t: t.slice(0, n),
    key: key.slice(0, n),
    write: write.slice(0, n),
    zone: zone.slice(0, n),
    length: n,
  };
}
