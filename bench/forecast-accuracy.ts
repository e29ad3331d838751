/**
 * `npm run bench -- forecast-accuracy [--heldout] [--no-r] [--r-only] [--r-results CSV]
 *    [--r-timeout S] [--max-points N] [--only SUBSTR] [--save-ours JSON] [--ours-results JSON]`
 *
 * Accuracy on the public series in ../shared/data/series/: every model's
 * rolling-origin MASE at a horizon of one day in the series' own interval
 * (at most 288 points), the out-of-sample MASE of model selection, and the
 * same origins run through R's forecast package (bench/r/forecast.R) when
 * Rscript is installed. Prints a markdown table, then one JSON line.
 *
 * Both sides see the same last --max-points points (default 4000) of each
 * series: R's auto.arima and tbats take minutes per fit on 10,000 points with
 * a 288-point season. Each R (series, method) runs under `timeout`.
 *
 * --heldout: instead of ../shared/data/series, real series nobody tuned the
 * models on: the example datasets that ship with R (`datasets`, and
 * `forecast`'s taylor, wineind, woolyrnq and gas), exported by Rscript at run
 * time. Horizon: one day for sub-daily series (as above), else the M4
 * competition's (14 days, 13 weeks, 18 months, 8 quarters, 6 years).
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { evaluateSelection, evaluationPlan, type Evaluation } from "../src/forecast/evaluate.js";
import { parseSeriesCsv } from "../src/forecast/csv.js";
import { emit, log, round } from "./_util.js";

const here = dirname(fileURLToPath(import.meta.url));
const dataDir = resolve(here, "../../shared/data/series");
const R_METHODS = ["snaive", "ets", "auto.arima", "tbats"] as const;
const MAX_HORIZON = 288;

interface IndexEntry {
  file: string;
  interval_seconds: number;
  season: number;
  points: number;
}

function flag(name: string): boolean {
  return process.argv.includes(name);
}
function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const maxPoints = Number(option("--max-points") ?? 4000);
const rTimeout = Number(option("--r-timeout") ?? 120);
const only = option("--only");
const rResultsFile = option("--r-results");
const useR = !flag("--no-r") && (rResultsFile !== undefined || spawnSync("which", ["Rscript"]).status === 0);
const rOnly = flag("--r-only");

interface Prepared {
  entry: IndexEntry;
  values: Float64Array;
  horizon: number;
}

const DAY = 86400;
/** Held-out series: one day for sub-daily series (capped), else the M4 competition's horizon. */
function horizonFor(intervalSeconds: number): number {
  if (intervalSeconds < DAY) return Math.max(1, Math.min(MAX_HORIZON, Math.round(DAY / intervalSeconds)));
  if (intervalSeconds >= 365 * DAY) return 6;
  if (intervalSeconds >= 90 * DAY) return 8;
  if (intervalSeconds >= 28 * DAY) return 18;
  if (intervalSeconds >= 7 * DAY) return 13;
  return 14;
}

function sharedSeries(): Prepared[] {
  const index = JSON.parse(readFileSync(join(dataDir, "index.json"), "utf8")) as IndexEntry[];
  return index.map((entry) => {
    const parsed = parseSeriesCsv(readFileSync(join(dataDir, entry.file), "utf8"));
    // one day in the series' own interval (the issue's horizon), at least one step
    const horizon = Math.max(1, Math.min(MAX_HORIZON, Math.round(DAY / entry.interval_seconds)));
    return { entry, values: parsed.values, horizon };
  });
}

const MONTH = 2629800;
/**
 * R's example datasets used as held-out series: name, season (1: none; the calendar season where
 * the data has one, a day for the half-hourly `taylor`), interval. Multivariate ones give their
 * first column (Seatbelts: drivers killed; EuStockMarkets: the DAX).
 */
const HELD_OUT: readonly [string, number, number][] = [
  ["AirPassengers", 12, MONTH],
  ["co2", 12, MONTH],
  ["nottem", 12, MONTH],
  ["ldeaths", 12, MONTH],
  ["USAccDeaths", 12, MONTH],
  ["UKDriverDeaths", 12, MONTH],
  ["Seatbelts", 12, MONTH],
  ["wineind", 12, MONTH],
  ["gas", 12, MONTH],
  ["sunspot.month", 1, MONTH],
  ["UKgas", 4, 3 * MONTH],
  ["woolyrnq", 4, 3 * MONTH],
  ["JohnsonJohnson", 4, 3 * MONTH],
  ["austres", 4, 3 * MONTH],
  ["lynx", 1, 365.25 * DAY],
  ["Nile", 1, 365.25 * DAY],
  ["LakeHuron", 1, 365.25 * DAY],
  ["nhtemp", 1, 365.25 * DAY],
  ["EuStockMarkets", 1, DAY],
  ["taylor", 48, 1800],
];

function heldOutSeries(): Prepared[] {
  if (spawnSync("which", ["Rscript"]).status !== 0) {
    log("--heldout reads R's example datasets: install r-cran-forecast (Rscript) first");
    process.exit(2);
  }
  const dir = join(tmpdir(), `shardctl-heldout-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const names = HELD_OUT.map(([n]) => `"${n}"`).join(",");
  const script =
    `suppressPackageStartupMessages(library(forecast)); for (n in c(${names})) { ` +
    `x <- get(n); if (!is.null(dim(x))) x <- x[, 1]; ` +
    `write.table(as.numeric(x), file.path("${dir}", paste0(n, ".txt")), row.names = FALSE, col.names = FALSE) }`;
  const r = spawnSync("Rscript", ["-e", script], { encoding: "utf8" });
  if (r.status !== 0) {
    log(`Rscript could not export the datasets: ${r.stderr.trim()}`);
    process.exit(1);
  }
  const series = HELD_OUT.map(([name, season, interval]) => {
    const text = readFileSync(join(dir, `${name}.txt`), "utf8")
      .trim()
      .split("\n");
    const values = Float64Array.from(text, Number);
    if (values.some((v) => !Number.isFinite(v))) throw new Error(`${name}: R exported a missing value`);
    const entry = { file: name, interval_seconds: interval, season, points: values.length };
    return { entry, values, horizon: horizonFor(interval) };
  });
  rmSync(dir, { recursive: true, force: true });
  return series;
}

const prepared: Prepared[] = (flag("--heldout") ? heldOutSeries() : sharedSeries())
  .filter((p) => !only || p.entry.file.includes(only))
  .map((p) => ({ ...p, values: p.values.slice(Math.max(0, p.values.length - maxPoints)) }));

// ---- the origins, decided once and shared with R through a manifest ----
const plans = prepared.map((p) =>
  evaluationPlan(
    { values: p.values, intervalSeconds: p.entry.interval_seconds, season: p.entry.season },
    p.horizon,
  ),
);

interface RRow {
  file: string;
  method: string;
  mase: number | undefined;
  seconds: number;
  notes: string;
}

function parseRCsv(text: string): RRow[] {
  const rows: RRow[] = [];
  for (const line of text.trim().split(/\r?\n/).slice(1)) {
    const cells =
      line.match(/("([^"]*)"|[^,]*)(,|$)/g)?.map((c) => c.replace(/,$/, "").replace(/^"|"$/g, "")) ?? [];
    const [file, method, mase, , elapsed, notes, cpu] = cells;
    // CPU seconds when the script reported them (the machine may be shared), else elapsed
    const seconds = cpu !== undefined && cpu !== "" ? cpu : elapsed;
    if (!file) continue;
    rows.push({
      file,
      method,
      mase: mase === "NA" || mase === "" ? undefined : Number(mase),
      seconds: Number(seconds),
      notes: notes ?? "",
    });
  }
  return rows;
}

/** Runs every (series, method) R job in one background shell, each under `timeout`. */
function startR(): Promise<RRow[]> {
  const work = join(tmpdir(), `shardctl-forecast-accuracy-${process.pid}`);
  mkdirSync(work, { recursive: true });
  const script = join(here, "r", "forecast.R");
  const lines = ["#!/bin/sh"];
  const outputs: { out: string; file: string; method: string }[] = [];
  const manifests = prepared.map((p, i) => {
    const manifest = join(work, `manifest-${i}.csv`);
    const seriesFile = join(work, `series-${i}.csv`);
    writeFileSync(seriesFile, "value\n" + Array.from(p.values).join("\n") + "\n");
    writeFileSync(
      manifest,
      `file,path,m,h,n_used,origins\n${p.entry.file},${seriesFile},${p.entry.season},${plans[i].horizon},${p.values.length},${plans[i].origins.join(" ")}\n`,
    );
    return manifest;
  });
  // cheap methods first, so that a stopped run still has them for every series
  for (const method of R_METHODS) {
    prepared.forEach((p, i) => {
      const out = join(work, `r-${i}-${method}.csv`);
      outputs.push({ out, file: p.entry.file, method });
      lines.push(
        `timeout --signal=KILL ${rTimeout} Rscript '${script}' '${manifests[i]}' '${out}' ${method} ${rTimeout} 2>>'${work}/r.log'`,
      );
    });
  }
  const runner = join(work, "run.sh");
  writeFileSync(runner, lines.join("\n") + "\n");
  log(`R: ${outputs.length} jobs, ${rTimeout}s limit each, log in ${work}/r.log`);
  return new Promise((resolvePromise) => {
    const child = spawn("sh", [runner], { stdio: "ignore" });
    child.on("exit", () => {
      const rows: RRow[] = [];
      for (const o of outputs) {
        if (existsSync(o.out)) rows.push(...parseRCsv(readFileSync(o.out, "utf8")));
        else
          rows.push({
            file: o.file,
            method: o.method,
            mase: undefined,
            seconds: rTimeout,
            notes: `timed out after ${rTimeout}s`,
          });
      }
      writeFileSync(
        join(work, "r-results.csv"),
        "file,method,mase,smape,seconds,notes,cpu_seconds\n" +
          rows
            .map((r) => `"${r.file}","${r.method}",${r.mase ?? "NA"},,${r.seconds},"${r.notes}",${r.seconds}`)
            .join("\n") +
          "\n",
      );
      log(`R results saved to ${join(work, "r-results.csv")} (reuse with --r-results)`);
      resolvePromise(rows);
    });
  });
}

const rPromise: Promise<RRow[]> = rResultsFile
  ? Promise.resolve(parseRCsv(readFileSync(rResultsFile, "utf8")))
  : useR
    ? startR()
    : Promise.resolve([]);

// ---- our side ----
/** What the report needs from one series' evaluation; also the shape saved by --save-ours. */
interface Ours {
  file: string;
  models: { name: string; mase: number }[];
  selected: number;
  choices: string[];
  seconds: number;
}
function summarise(file: string, evaluation: Evaluation, seconds: number): Ours {
  return {
    file,
    models: evaluation.models.map((m) => ({ name: m.name, mase: m.mase })),
    selected: evaluation.selected.mase,
    choices: evaluation.choices.map((c) => c.name),
    seconds,
  };
}
const oursFile = option("--ours-results");
const ours: (Ours | undefined)[] = [];
if (oursFile) {
  const saved = JSON.parse(readFileSync(oursFile, "utf8")) as Ours[];
  for (const p of prepared) ours.push(saved.find((o) => o.file === p.entry.file));
} else if (!rOnly) {
  for (const [i, p] of prepared.entries()) {
    // yield so the R runner's events are serviced between series
    await new Promise((r) => setImmediate(r));
    const cpuStart = process.cpuUsage();
    const evaluation = evaluateSelection(
      { values: p.values, intervalSeconds: p.entry.interval_seconds, season: p.entry.season },
      { horizon: p.horizon },
    );
    const cpu = process.cpuUsage(cpuStart);
    const seconds = (cpu.user + cpu.system) / 1e6;
    ours.push(summarise(p.entry.file, evaluation, seconds));
    log(
      `${p.entry.file}: ${evaluation.models.map((m) => `${m.name}=${m.mase.toFixed(3)}`).join(" ")} ` +
        `selected=${evaluation.selected.mase.toFixed(3)} (${seconds.toFixed(1)}s) [${i + 1}/${prepared.length}]`,
    );
  }
}
const saveOurs = option("--save-ours");
if (saveOurs && !oursFile) writeFileSync(saveOurs, JSON.stringify(ours));
if (useR) log("waiting for R ...");
const rRows = await rPromise;
const rBy = (file: string, method: string): RRow | undefined =>
  rRows.find((r) => r.file === file && r.method === method);

// ---- report ----
const modelNames = ours.find((o) => o)?.models.map((m) => m.name) ?? [];
const fmt = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? "—" : x.toFixed(3));
const head = ["series", "m", "H", "K", ...modelNames, "**selected**", "chosen (per origin)"];
if (useR) head.push(...R_METHODS.map((m) => `R ${m}`));
const out: string[] = [];
out.push(`| ${head.join(" | ")} |`);
out.push(`|${head.map(() => "---").join("|")}|`);
let beatsBaseline = 0;
let within5 = 0;
let worstGap = 0;
let worstGapSeries = "";
const selectedMases: number[] = [];
let oursSeconds = 0;
// the R comparison is made on the series where both ets and auto.arima finished
const both = { ours: [] as number[], ets: [] as number[], arima: [] as number[], better: [] as number[] };
let bothOursSeconds = 0;
let bothRSeconds = 0;
const etsOnly = { ours: [] as number[], ets: [] as number[] };
let rTimeouts = 0;
prepared.forEach((p, i) => {
  const o = ours[i];
  const row: string[] = [
    p.entry.file.replace(/\.csv$/, ""),
    String(p.entry.season),
    String(plans[i].horizon),
    String(plans[i].origins.length),
  ];
  if (o) {
    const best = Math.min(...o.models.map((m) => m.mase));
    const sel = o.selected;
    const sn = o.models.find((m) => m.name === "seasonal_naive")!.mase;
    if (sel < sn) beatsBaseline++;
    const gap = best > 0 ? sel / best - 1 : 0;
    if (gap <= 0.05) within5++;
    if (gap > worstGap) {
      worstGap = gap;
      worstGapSeries = p.entry.file;
    }
    selectedMases.push(sel);
    oursSeconds += o.seconds;
    row.push(...o.models.map((m) => (m.mase === best ? `**${fmt(m.mase)}**` : fmt(m.mase))));
    row.push(`**${fmt(sel)}**`);
    const counts = new Map<string, number>();
    for (const c of o.choices) counts.set(c, (counts.get(c) ?? 0) + 1);
    row.push([...counts.entries()].map(([n, k]) => (k > 1 ? `${n}×${k}` : n)).join(", "));
  }
  if (useR) {
    for (const m of R_METHODS) {
      const r = rBy(p.entry.file, m);
      row.push(r?.mase === undefined ? (r ? "timeout" : "—") : fmt(r.mase));
      if (r && r.mase === undefined) rTimeouts++;
    }
    const e = rBy(p.entry.file, "ets");
    const a = rBy(p.entry.file, "auto.arima");
    if (o && e?.mase !== undefined) {
      etsOnly.ours.push(o.selected);
      etsOnly.ets.push(e.mase);
    }
    if (o && e?.mase !== undefined && a?.mase !== undefined) {
      both.ours.push(o.selected);
      both.ets.push(e.mase);
      both.arima.push(a.mase);
      both.better.push(Math.min(e.mase, a.mase));
      bothOursSeconds += o.seconds;
      bothRSeconds += e.seconds + a.seconds;
    }
  }
  out.push(`| ${row.join(" | ")} |`);
});
const median = (xs: number[]): number => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
out.push("");
if (ours.some((o) => o)) {
  out.push(`- selected beats seasonal naive on ${beatsBaseline} of ${selectedMases.length} series`);
  out.push(`- selected within 5% of the best single model on ${within5} of ${selectedMases.length} series`);
  out.push(`- worst gap to the best single model: ${(worstGap * 100).toFixed(1)}% (${worstGapSeries})`);
  out.push(
    `- median MASE of the selected model: ${fmt(median(selectedMases))}; our total run time ${oursSeconds.toFixed(1)} s (all models, nested selection)`,
  );
}
if (useR) {
  out.push(
    `- vs R ets on the ${etsOnly.ets.length} series where it finished: median MASE ours ${fmt(median(etsOnly.ours))}, ` +
      `R ets ${fmt(median(etsOnly.ets))}`,
  );
  out.push(
    `- vs R on the ${both.ets.length} series where both ets and auto.arima finished: median MASE ours ${fmt(median(both.ours))}, ` +
      `ets ${fmt(median(both.ets))}, auto.arima ${fmt(median(both.arima))}, per-series better of the two ${fmt(median(both.better))}; ` +
      `CPU time on those series: ours ${bothOursSeconds.toFixed(1)} s (7 models + nested selection), R ets + auto.arima ${bothRSeconds.toFixed(1)} s`,
  );
  out.push(`- R fits that did not finish within the limit: ${rTimeouts}`);
}
process.stdout.write(out.join("\n") + "\n");
emit({
  series: prepared.length,
  held_out: flag("--heldout"),
  max_points: maxPoints,
  selected_beats_snaive: beatsBaseline,
  selected_within_5pct_of_best: within5,
  worst_gap_to_best_pct: round(worstGap * 100, 1),
  median_selected_mase: round(median(selectedMases)),
  ours_cpu_s: round(oursSeconds, 1),
  r_compared_series: both.ets.length,
  median_selected_mase_on_compared: round(median(both.ours)),
  median_r_ets_mase_on_compared: round(median(both.ets)),
  median_r_auto_arima_mase_on_compared: round(median(both.arima)),
  median_r_better_mase_on_compared: round(median(both.better)),
  ours_cpu_s_on_compared: round(bothOursSeconds, 1),
  r_ets_auto_arima_cpu_s_on_compared: round(bothRSeconds, 1),
  r_unfinished_fits: rTimeouts,
});
