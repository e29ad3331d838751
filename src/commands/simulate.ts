/**
 * `shardctl simulate --trace FILE --latency MATRIX`: replays a workload trace
 * in-process through the engine and compares four placement policies
 * (static, reactive, predictive, oracle). `shardctl simulate build-trace`
 * turns real load series (or a request log) into such a trace.
 *
 * The command reads the files; src/sim does the work on the parsed data.
 */
import type { Command } from "commander";
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  LatencyModel,
  nodePerZone,
  nodesOverZones,
  parseZoneMatrix,
  type ZoneMatrix,
} from "../engine/latency.js";
import { validateKey } from "../engine/segmenter.js";
import { UsageError } from "../errors.js";
import { sameFile } from "../fs-paths.js";
import { detectSeason, parseSeriesCsv } from "../forecast/index.js";
import { formatBytes, printJson, printTable, type IO } from "../output.js";
import {
  buildTraceFromRequests,
  buildTraceFromSeries,
  type RequestRow,
  type SeriesSource,
} from "../sim/build-trace.js";
import { engineForecaster } from "../sim/forecaster.js";
import {
  DEFAULT_SIM_OPTIONS,
  POLICIES,
  simulate,
  type PolicyName,
  type SimOptions,
  type SimResult,
} from "../sim/simulate.js";
import { checkReplaySize } from "../sim/workload.js";
import {
  badTimestampReason,
  parseTraceTimestamp,
  parseTrace,
  splitCsvLine,
  TRACE_MAX_KEY_BYTES,
} from "../sim/trace.js";
import { checkOutputPath, writeOutputFile } from "../store/embedded.js";
import { MAX_TRACE_BYTES, parsePositiveInt, readInputText } from "./common.js";
import type { CommandContext, RegisterCommand } from "./context.js";
import { StepProgress } from "./step-progress.js";

export interface SimulateOptions {
  trace: string;
  latency: string;
  nodes?: number;
  json: boolean;
  sim: Partial<SimOptions>;
}

export interface SimulateReport extends SimResult {
  elapsed_s: number;
  events_per_s: number;
}

function readText(file: string, what: string, maxBytes?: number): string {
  return readInputText(file, what, maxBytes);
}

/** Reads and validates a latency matrix file. */
export function readZoneMatrix(file: string): ZoneMatrix {
  // a UTF-8 byte order mark (editors on Windows write one) is not JSON; CSV inputs accept it too
  const text = readText(file, "the latency matrix").replace(/^\uFEFF/, "");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`the latency matrix ${file} is not valid JSON: ${(err as Error).message}`, {
      hint: 'expected {"zones": ["a","b"], "rtt_ms": [[1,50],[50,1]]}',
    });
  }
  return parseZoneMatrix(value, `the latency matrix ${file}`);
}

/** Reads everything first, then replays: a bad input is refused before any output. */
export function runSimulate(
  opts: SimulateOptions,
  progress?: Pick<StepProgress, "update" | "end">,
): SimulateReport {
  const matrix = readZoneMatrix(opts.latency);
  const nodes =
    opts.nodes === undefined ? nodePerZone(matrix.zones) : nodesOverZones(matrix.zones, opts.nodes);
  const latency = LatencyModel.fromZoneMatrix(matrix, nodes);
  const trace = parseTrace(readText(opts.trace, "the trace", MAX_TRACE_BYTES), matrix.zones, {
    source: `the trace ${opts.trace}`,
  });
  const { forecast } = engineForecaster();
  const start = performance.now();
  const policies = opts.sim?.policies ?? DEFAULT_SIM_OPTIONS.policies;
  const sim: Partial<SimOptions> = progress
    ? {
        ...opts.sim,
        onProgress: (policy, done, intervals) => {
          opts.sim?.onProgress?.(policy, done, intervals);
          const before = policies.indexOf(policy) * intervals;
          progress.update(
            before + done,
            policies.length * intervals,
            `${policy}, interval ${done} of ${intervals}`,
          );
        },
      }
    : (opts.sim ?? {});
  let result;
  try {
    result = simulate(trace, latency, forecast, sim);
  } finally {
    progress?.end();
  }
  const elapsed = (performance.now() - start) / 1000;
  return {
    ...result,
    elapsed_s: round(elapsed, 3),
    events_per_s: Math.round(trace.length / Math.max(elapsed, 1e-9)),
  };
}

function round(n: number, d = 3): number {
  const f = 10 ** d;
  return Math.round(n * f) / f;
}

export function printSimulation(io: IO, r: SimulateReport): void {
  const oracle = r.policies.oracle?.mean_ms;
  const rows = POLICIES.filter((p) => r.policies[p]).map((p) => {
    const x = r.policies[p]!;
    return [
      p,
      round(x.mean_ms, 2),
      round(x.p99_ms, 2),
      x.migrations,
      formatBytes(x.bytes_moved),
      oracle ? `${round((x.mean_ms / oracle - 1) * 100, 1)}%` : "-",
    ];
  });
  printTable(io, ["policy", "mean ms", "p99 ms", "migrations", "bytes moved", "mean vs oracle"], rows);
  const free = r.oracle_without_cooldown;
  if (free && oracle)
    io.out.write(
      `oracle without the cooldown (a bound for any placement): mean ${round(free.mean_ms, 2)} ms ` +
        `(${round((free.mean_ms / oracle - 1) * 100, 1)}% vs oracle), ${free.migrations} migrations\n`,
    );
}

/** Parses the simulator flags shared by the command and the bench. */
function simOptionsFrom(o: SimulateFlags): Partial<SimOptions> {
  const sim: Partial<SimOptions> = {};
  if (o.interval !== undefined) sim.intervalSeconds = parsePositiveInt(o.interval, "--interval");
  if (o.horizon !== undefined) sim.horizonIntervals = parsePositiveInt(o.horizon, "--horizon");
  if (o.segments !== undefined) sim.segmentCount = parsePositiveInt(o.segments, "--segments");
  if (o.keyBytes !== undefined) sim.keyBytes = parsePositiveInt(o.keyBytes, "--key-bytes");
  if (o.lead !== undefined) {
    // 0 is allowed (decide at the boundary itself); the simulator checks it is below the interval
    if (!/^\d{1,9}$/.test(o.lead.trim()))
      throw new UsageError(`--lead must be a whole number of seconds ≥ 0, got ${JSON.stringify(o.lead)}`);
    sim.leadSeconds = Number(o.lead.trim());
  }
  if (o.policies !== undefined) {
    const list = o.policies.split(",").map((s) => s.trim());
    for (const p of list) {
      if (!POLICIES.includes(p as PolicyName))
        throw new UsageError(`unknown policy ${JSON.stringify(p)}; choose from ${POLICIES.join(", ")}`);
    }
    sim.policies = list as PolicyName[];
  }
  return sim;
}

interface SimulateFlags {
  trace?: string;
  latency?: string;
  nodes?: string;
  json?: boolean;
  interval?: string;
  horizon?: string;
  segments?: string;
  keyBytes?: string;
  lead?: string;
  policies?: string;
}

// ---- build-trace ----------------------------------------------------------

export interface BuildTraceOptions {
  series?: string;
  requests?: string;
  out: string;
  keys?: number;
  zones: string[];
  events: number;
  seed: number;
  days?: number;
}

/** Reads every series CSV in a directory; season and interval from index.json when it lists the file. */
export function readSeriesDir(dir: string): SeriesSource[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new UsageError(`--series ${dir} is not a directory`);
  const meta = new Map<string, { interval_seconds?: number; season?: number }>();
  const indexFile = join(dir, "index.json");
  if (existsSync(indexFile)) {
    let list: unknown;
    try {
      list = JSON.parse(readInputText(indexFile, "the series index").replace(/^\uFEFF/, ""));
    } catch (err) {
      if (err instanceof UsageError) throw err;
      throw new UsageError(`${indexFile} is not valid JSON`);
    }
    if (Array.isArray(list)) {
      for (const e of list as { file?: unknown; interval_seconds?: number; season?: number }[]) {
        if (e && typeof e.file === "string") meta.set(e.file, e);
      }
    }
  }
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(".csv"))
    .sort();
  if (files.length === 0) throw new UsageError(`no .csv series in ${dir}`);
  return files.map((f) => {
    let parsed;
    try {
      parsed = parseSeriesCsv(readInputText(join(dir, f), "the series"));
    } catch (err) {
      throw new UsageError(`series ${f}: ${(err as Error).message}`);
    }
    const m = meta.get(f);
    const intervalSeconds = m?.interval_seconds ?? parsed.intervalSeconds;
    if (!(typeof intervalSeconds === "number" && Number.isFinite(intervalSeconds) && intervalSeconds >= 1))
      throw new UsageError(
        `series ${f}: an interval of ${JSON.stringify(intervalSeconds)} s (${m?.interval_seconds !== undefined ? `interval_seconds in ${indexFile}` : "from its timestamps"}) is not a number of seconds ≥ 1`,
      );
    // the index names the series' interval; timestamps spaced otherwise would stretch or squeeze the trace
    // (15%: calendar months are 28 to 31 days apart)
    if (m?.interval_seconds !== undefined && Math.abs(intervalSeconds / parsed.intervalSeconds - 1) > 0.15)
      throw new UsageError(
        `series ${f}: interval_seconds ${intervalSeconds} in ${indexFile}, but its timestamps are ${parsed.intervalSeconds} s apart`,
        { hint: "leave interval_seconds out to use the timestamps' spacing, or correct one of the two" },
      );
    const season: unknown = m?.season;
    if (season !== undefined && !(Number.isSafeInteger(season) && (season as number) >= 1))
      throw new UsageError(
        `series ${f}: a season of ${JSON.stringify(season)} (season in ${indexFile}) is not a whole number of intervals ≥ 1`,
        { hint: "leave season out to have it detected, or give 1 for none" },
      );
    return {
      name: basename(f, ".csv"),
      values: parsed.values,
      startMs: parsed.startMs,
      intervalSeconds,
      season: (season as number | undefined) ?? detectSeason(parsed.values, intervalSeconds),
    };
  });
}

/**
 * Reads a request log `timestamp,key[,…]` (header optional), sorted or not.
 * Timestamps and keys are checked as `simulate` checks a trace's (the same
 * functions), so a trace built from the log is one simulate reads.
 */
export function readRequests(file: string): RequestRow[] {
  const text = readText(file, "the request log", MAX_TRACE_BYTES);
  const rows: RequestRow[] = [];
  const lines = text.replace(/^\uFEFF/, "").split(/\r\n?|\n/);
  const fail = (i: number, why: string): never => {
    throw new UsageError(`${file}, line ${i + 1}: ${why}; nothing was written`, {
      hint: "each line is `timestamp,key[,...]`: timestamp ISO-8601 or epoch ms from 2000-01-01, key 1-1024 bytes of UTF-8",
    });
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === "") continue;
    const f = splitCsvLine(line);
    if (!f || f.length < 2) fail(i, "expected timestamp,key[,...]");
    const [ts, key] = f!;
    if (i === 0 && ts.trim().toLowerCase() === "timestamp") continue;
    const t = parseTraceTimestamp(ts.trim());
    if (t === undefined) fail(i, badTimestampReason(ts.trim()));
    try {
      validateKey(key, TRACE_MAX_KEY_BYTES);
    } catch (err) {
      fail(i, (err as Error).message);
    }
    rows.push({ t: t!, key });
  }
  rows.sort((a, b) => a.t - b.t);
  return rows;
}

/** What build-trace wrote (its --json). */
export interface BuildTraceSummary {
  out: string;
  events: number;
  keys: number;
  zones: string[];
  /** First and last event, ISO-8601. */
  span: { from: string; to: string };
}

export function runBuildTrace(opts: BuildTraceOptions): {
  events: number;
  text: string;
  summary: BuildTraceSummary;
} {
  if (!!opts.series === !!opts.requests)
    throw new UsageError("give exactly one of --series DIR or --requests FILE");
  const text = opts.series
    ? buildTraceFromSeries(readSeriesDir(opts.series), {
        keys: opts.keys ?? 48,
        zones: opts.zones,
        events: opts.events,
        seed: opts.seed,
        days: opts.days,
      })
    : buildTraceFromRequests(readRequests(opts.requests!), {
        zones: opts.zones,
        seed: opts.seed,
        keys: opts.keys,
      });
  // read back as simulate reads it: a trace build-trace writes is one simulate takes (and the summary's figures)
  const trace = parseTrace(text, opts.zones, { source: "the trace built" });
  // and one simulate replays at its defaults (a stray timestamp in a request log can stretch it by years)
  try {
    checkReplaySize(trace, opts.zones.length, DEFAULT_SIM_OPTIONS);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    throw new UsageError(
      `the trace built (${trace.length} events from ${new Date(trace.t[0]).toISOString()} to ${new Date(trace.t[trace.length - 1]).toISOString()}) is more than simulate replays at its default --interval: ${err.message}; nothing was written`,
      { hint: "check the input for a stray timestamp (wrong year, or seconds mixed with milliseconds)" },
    );
  }
  const iso = (ms: number) => new Date(ms).toISOString();
  return {
    events: trace.length,
    text,
    summary: {
      out: opts.out,
      events: trace.length,
      keys: trace.keys.length,
      zones: [...opts.zones],
      span: { from: iso(trace.t[0]), to: iso(trace.t[trace.length - 1]) },
    },
  };
}

/**
 * Refuses an --out that is one of the inputs (the request log, or a series CSV of --series): the
 * trace would replace the data it was built from (and the next build from the directory fail on it).
 */
function refuseOutputOverInput(out: string, series: string | undefined, requests: string | undefined): void {
  if (!existsSync(out)) return;
  const inputs = requests
    ? [requests]
    : series && existsSync(series) && statSync(series).isDirectory()
      ? readdirSync(series)
          .filter((f) => f.endsWith(".csv") || f === "index.json")
          .map((f) => join(series, f))
      : [];
  const same = inputs.find((f) => sameFile(f, out));
  if (same)
    throw new UsageError(
      `--out ${out} is ${same === out ? "the input itself" : `the input ${same}`}: the trace would replace the data it is built from; nothing was written`,
      { hint: "write the trace to another file (outside the --series directory)" },
    );
}

function parseSeed(v: string): number {
  if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(Number(v)))
    throw new UsageError(`--seed must be an integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

export const registerSimulate: RegisterCommand = (program: Command, ctx: CommandContext) => {
  const cmd = program
    .command("simulate")
    .description(
      "replay a workload trace and compare placement policies: static, reactive, predictive, oracle",
    )
    // `simulate help build-trace`, as `node help start` (a command with an action of its own gets no
    // help subcommand unless asked)
    .helpCommand(true)
    .option(
      "-t, --trace <file>",
      "the trace: CSV timestamp,key,op,zone (ISO-8601 or epoch ms from 2000-01-01; read|write), sorted by time",
    )
    .option(
      "-l, --latency <file>",
      'RTT matrix: JSON {"zones": [...], "rtt_ms": [[...], ...]} (square, ms, ≥ 0)',
    )
    .option("--nodes <n>", "nodes, dealt round-robin over the matrix's zones (default: one per zone)")
    .option("--interval <seconds>", "decision interval (default 300)")
    .option(
      "--horizon <intervals>",
      "planning horizon in decision intervals (default 6); one that leaves the predictive policy no forecast inside the trace runs, with a note",
    )
    .option("--segments <n>", "segments the key space is cut into (default 1024)")
    .option("--key-bytes <n>", "bytes of data per key, moved with its shard (default 8 MiB)")
    .option(
      "--lead <seconds>",
      "decisions are made this long before the cutover boundary, 0 or more and below the interval (default 30)",
    )
    .option("--policies <list>", `comma-separated subset of ${POLICIES.join(",")}`)
    .option("--json", "print the comparison as JSON", false)
    .addHelpText("after", SIMULATE_HELP)
    .action((o: SimulateFlags) => {
      if (!o.trace || !o.latency) {
        throw new UsageError("simulate needs --trace FILE and --latency MATRIX", {
          hint: "build a trace with `shardctl simulate build-trace --series DIR --out trace.csv`",
        });
      }
      const nodes = o.nodes === undefined ? undefined : parsePositiveInt(o.nodes, "--nodes");
      const sim = simOptionsFrom(o);
      const r = runSimulate(
        { trace: o.trace, latency: o.latency, nodes, json: !!o.json, sim },
        new StepProgress(ctx.io.err, "replay"),
      );
      ctx.io.err.write(
        `replayed ${r.events} events (${r.keys} keys, ${r.active_segments} segments, ${r.intervals} intervals of ${r.interval_seconds} s, ${r.nodes} nodes) in ${r.elapsed_s} s: ${r.events_per_s} events/s\n`,
      );
      for (const note of r.notes) ctx.io.err.write(`note: ${note}\n`);
      if (o.json) printJson(ctx.io, r);
      else printSimulation(ctx.io, r);
    });
  cmd.exitOverride();

  const build = cmd
    .command("build-trace")
    .description("build a follow-the-sun trace from real load series (or from a real request log)")
    .option(
      "--series <dir>",
      "directory of timestamp,value CSV series (index.json gives season and interval)",
    )
    .option("--requests <file>", "a request log timestamp,key[,...] instead: real keys and times")
    .requiredOption("-o, --out <file>", "where to write the trace CSV")
    .option(
      "--keys <n>",
      "keys (series: dealt over the series, default 48; requests: keep the N most requested)",
    )
    .option("--zones <list>", "origin zones, comma-separated", "a,b,c")
    .option("--events <n>", "expected accesses in the trace (series only)", "100000")
    .option("--days <n>", "days of each series used, from its end (series only)", "7")
    .option("--seed <n>", "random seed", "1")
    .option("--json", "print what was written as JSON: out, events, keys, zones, span", false)
    .addHelpText("after", BUILD_HELP)
    .action(
      (o: {
        series?: string;
        requests?: string;
        out: string;
        keys?: string;
        zones: string;
        events: string;
        days: string;
        seed: string;
        json?: boolean;
      }) => {
        // a bad --out path is refused before the series are read and the trace is built
        checkOutputPath(o.out);
        refuseOutputOverInput(o.out, o.series, o.requests);
        const r = runBuildTrace({
          series: o.series,
          requests: o.requests,
          out: o.out,
          keys: o.keys === undefined ? undefined : parsePositiveInt(o.keys, "--keys"),
          zones: o.zones.split(",").map((z) => z.trim()),
          events: parsePositiveInt(o.events, "--events"),
          days: parsePositiveInt(o.days, "--days"),
          seed: parseSeed(o.seed),
        });
        writeOutputFile(o.out, r.text);
        ctx.io.err.write(`wrote ${r.events} events to ${o.out}\n`);
        // (commander may hand a --json after the subcommand to simulate's own --json)
        if (o.json || (cmd.opts() as { json?: boolean }).json) printJson(ctx.io, r.summary);
      },
    );
  build.exitOverride();
};

const SIMULATE_HELP = `
Every policy places each shard on one node per decision interval. The planner-
driven policies pay for a move as a live migration does: the copy (bytes /
bandwidth) must finish before the cutover boundary, and writes in the fenced
tail wait for the cutover.

  static      the initial layout, never moved
  reactive    the planner on what was observed (moves after a change)
  predictive  the planner on the forecast of src/forecast (moves ahead of it),
              with the reactive check for shards the forecast leaves alone
  oracle      knows the trace: per segment, the exact optimum over node
              schedules with the same cooldown between two moves, paying the
              write pause but not the copy's lead time (it may move a shard
              of any size at any boundary): a true lower bound on the mean
              of the others (the same optimum without the cooldown is
              printed under the table)

Reactive and predictive decide from the first boundary; until --horizon + 1
intervals are seen (nothing to forecast from yet) both plan on what they
observed. Near the trace's end both plan over what is left of the horizon.

A replay of more than a few seconds shows its progress on stderr (the policy
being replayed, intervals done of all policies'): a line redrawn in place on a
terminal, a plain line every 5 s otherwise. Standard output is not affected.

Examples:
  $ shardctl simulate build-trace --series ../shared/data/series --out trace.csv --events 300000
  $ echo '{"zones":["a","b","c"],"rtt_ms":[[1,50,80],[50,1,60],[80,60,1]]}' > rtt.json
  $ shardctl simulate --trace trace.csv --latency rtt.json
  $ shardctl simulate --trace trace.csv --latency rtt.json --nodes 6 --json`;

const BUILD_HELP = `
From series: keys are dealt over the series; each series drives its keys'
access rates, and each key's dominant origin zone follows the phase of its
series' season (follow the sun): zone floor(phase x zones) gets 70% of the
accesses, the others share the rest. 20% of accesses are writes. The same
seed gives the same trace.

From a request log (--requests): the log's real keys and times; the dominant
zone follows the time of day. Each line is timestamp,key[,...] (a header line
is skipped): the timestamp ISO-8601 (no zone = UTC) or epoch milliseconds from
2000-01-01 on (a smaller number is refused, not taken for seconds: multiply
epoch seconds by 1000); the key 1 to 1024 bytes of UTF-8, as simulate checks
a trace's. Zones (--zones) follow the config's rule: 1-32 of a-z, 0-9, _ and
-, not total, reads or writes. A log or option that breaks a rule is refused
naming the line (exit 2), and nothing is written.

--json prints what was written: {out, events, keys, zones, span: {from, to}}.

Examples:
  $ shardctl simulate build-trace --series ../shared/data/series --out trace.csv
  $ shardctl simulate build-trace --series ../shared/data/series --out t.csv --keys 20 --events 300000 --seed 7
  $ shardctl simulate build-trace --requests ../shared/data/traces/nasa_http_kennedy_19950801.csv --out nasa.csv
  $ shardctl simulate build-trace --series ../shared/data/series --out trace.csv --json | jq .span`;
