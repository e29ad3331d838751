/**
 * `shardctl forecast backtest`: measures forecasting quality on any
 * `timestamp,value` CSV — every model's rolling-origin MASE and sMAPE, and the
 * model that selection picks. The selected model's score is out of sample:
 * at each origin, selection only saw the data before it.
 */
import type { Command } from "commander";
import { UsageError, errorMessage } from "../errors.js";
import { minTrainingPoints } from "../forecast/backtest.js";
import { evaluateSelection } from "../forecast/evaluate.js";
import { parseSeriesCsv } from "../forecast/csv.js";
import { detectSeason } from "../forecast/season.js";
import { printJson, printTable, type IO } from "../output.js";
import { readInputText } from "./common.js";
import type { RegisterCommand } from "./context.js";
import { StepProgress } from "./step-progress.js";

/** A day ahead is the horizon placement decisions care about; capped so a fine-grained series stays quick. */
export const MAX_DEFAULT_HORIZON = 288;

export interface BacktestOptions {
  input: string;
  horizon?: string | number;
  season?: string | number;
  json?: boolean;
}

export interface BacktestDeps {
  io: IO;
  readFile: (path: string) => string;
  /** Progress on stderr while the models are fitted (a StepProgress on io.err by default). */
  progress?: Pick<StepProgress, "update" | "end">;
}

export interface BacktestReport {
  points: number;
  interval_seconds: number;
  season: number;
  horizon: number;
  origins: number;
  models: { name: string; mase: number; smape: number }[];
  selected: string;
  selected_mase: number;
  selected_smape: number;
  selected_per_origin: string[];
  notes: string[];
}

function positiveInt(raw: string | number | undefined, flag: string): number | undefined {
  if (raw === undefined) return undefined;
  const s = String(raw).trim();
  if (!/^\d+$/.test(s) || Number(s) < 1 || !Number.isSafeInteger(Number(s))) {
    throw new UsageError(
      `${flag} must be a whole number of points, at least 1 and at most ${Number.MAX_SAFE_INTEGER} (got "${s.length > 40 ? `${s.slice(0, 40)}…` : s}")`,
    );
  }
  return Number(s);
}

const round = (x: number): number => (Number.isFinite(x) ? Math.round(x * 10000) / 10000 : 0);

export function defaultHorizon(intervalSeconds: number): number {
  return Math.max(1, Math.min(MAX_DEFAULT_HORIZON, Math.round(86400 / intervalSeconds)));
}

export function runForecastBacktest(opts: BacktestOptions, deps: BacktestDeps): BacktestReport {
  const requestedHorizon = positiveInt(opts.horizon, "--horizon");
  const requestedSeason = positiveInt(opts.season, "--season");
  let text: string;
  try {
    text = deps.readFile(opts.input);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`cannot read ${opts.input}: ${errorMessage(err)}`, { cause: err });
  }
  const parsed = parseSeriesCsv(text, { minPoints: 16 });
  const notes = [...parsed.notes];
  const { values, intervalSeconds } = parsed;
  const season = requestedSeason ?? detectSeason(values, intervalSeconds);
  if (season > 1 && values.length < 2 * season) {
    notes.push(`fewer than two seasons of ${season} points: models fit no seasonal component`);
  }
  const horizon = requestedHorizon ?? defaultHorizon(intervalSeconds);
  const series = { values, intervalSeconds, season };
  const progress = deps.progress ?? new StepProgress(deps.io.err, "backtest");
  let evaluation;
  try {
    evaluation = evaluateSelection(series, { horizon }, (p) =>
      progress.update(p.fits, p.totalFits, `${p.stage}, model fit ${p.fits} of ${p.totalFits}`),
    );
  } finally {
    progress.end();
  }
  if (evaluation.plan.origins.length === 0) {
    // an origin must leave max(16, two seasons) points to train on, and one to score
    const needed = minTrainingPoints(season) + 1;
    throw new UsageError(
      `too few points for a backtest: ${values.length}; with ${season > 1 ? `a season of ${season}` : "no season"} it needs at least ${needed}`,
      {
        hint:
          season > 1
            ? `a backtest trains on more than two seasons (and at least 16 points); give more data, or a shorter --season`
            : "a backtest trains on at least 16 points and scores the ones after: give more data",
      },
    );
  }
  if (evaluation.plan.horizon !== horizon) {
    notes.push(
      `horizon reduced from ${horizon} to ${evaluation.plan.horizon} points: the series is too short`,
    );
  }
  return {
    points: values.length,
    interval_seconds: intervalSeconds,
    season,
    horizon: evaluation.plan.horizon,
    origins: evaluation.plan.origins.length,
    models: evaluation.models.map((m) => ({ name: m.name, mase: round(m.mase), smape: round(m.smape) })),
    selected: evaluation.final.name,
    selected_mase: round(evaluation.selected.mase),
    selected_smape: round(evaluation.selected.smape),
    selected_per_origin: evaluation.choices.map((c) => c.name),
    notes,
  };
}

export function printBacktest(report: BacktestReport, json: boolean, io: IO): void {
  if (json) {
    printJson(io, report);
    return;
  }
  for (const note of report.notes) io.err.write(`note: ${note}\n`);
  io.err.write(
    `${report.points} points every ${report.interval_seconds}s, season ${report.season}, ` +
      `horizon ${report.horizon}, ${report.origins} rolling origins\n`,
  );
  printTable(
    io,
    ["model", "MASE", "sMAPE %"],
    [
      ...report.models.map((m) => [m.name, m.mase, m.smape]),
      [
        `selected (out of sample: ${[...new Set(report.selected_per_origin)].join(", ")})`,
        report.selected_mase,
        report.selected_smape,
      ],
    ],
  );
  io.out.write(`selected model for this series: ${report.selected}\n`);
}

export const registerForecast: RegisterCommand = (program: Command, ctx) => {
  const forecast = program
    .command("forecast")
    .description("measure and inspect access forecasting (models, backtests, model selection)");
  forecast.addHelpText("after", FORECAST_HELP);
  forecast
    .command("backtest")
    .description("backtest every forecasting model on a timestamp,value CSV and show the one selection picks")
    .requiredOption("-i, --input <file>", "CSV with a header and rows of timestamp,value")
    .option(
      "-H, --horizon <points>",
      "points ahead to forecast (default: one day in the series' interval, at most 288)",
    )
    .option("-s, --season <points>", "season length in points (default: detected; 1 = no season)")
    .option("--json", "print one JSON object instead of a table")
    .addHelpText("after", BACKTEST_HELP)
    .exitOverride()
    .action((opts: BacktestOptions) => {
      const report = runForecastBacktest(opts, {
        io: ctx.io,
        readFile: (p) => readInputText(p, "the input"),
      });
      printBacktest(report, Boolean(opts.json), ctx.io);
    });
};

const FORECAST_HELP = `
Examples:
  shardctl forecast backtest --input requests.csv
  shardctl forecast backtest --input requests.csv --horizon 48 --json`;

const BACKTEST_HELP = `
How it measures:
  The last few windows of --horizon points (3 to 10 "rolling origins", spaced
  one horizon apart) are hidden in turn; every model is fitted on the data
  before a window and scored on it. MASE divides the mean absolute error by the
  in-sample error of the seasonal naive forecast (1.0 = as good as repeating the
  last season; lower is better). sMAPE is the symmetric percentage error.
  "selected" is scored out of sample too: at each origin, model selection ran
  on the data before it. The model named last is what selection picks on the
  whole series, i.e. what would forecast from now on.

Input:
  A header line, then timestamp,value rows. Timestamps are ISO-8601 (a missing
  zone is read as UTC) or epoch seconds / milliseconds. Rows may be unsorted;
  duplicate timestamps are averaged; gaps on the regular grid (median spacing)
  are filled by linear interpolation. Every repair is reported as a note.

Progress:
  A long backtest (a large file, a long season) shows how many model fits are
  done on stderr: a line redrawn in place on a terminal, a plain line every 5 s
  otherwise. Standard output (the table or the JSON) is not affected.

Examples:
  # the table, with the season detected (daily or weekly, else autocorrelation)
  shardctl forecast backtest --input ../shared/data/series/nab_nyc_taxi_30min.csv

  # a 12-point horizon with a forced daily season of 48 half-hours, as JSON
  shardctl forecast backtest -i taxi.csv --horizon 12 --season 48 --json

JSON output (one object):
  {"points": N, "interval_seconds": S, "season": P, "horizon": H, "origins": K,
   "models": [{"name": "seasonal_naive", "mase": x, "smape": y}, ...],
   "selected": "name", "selected_mase": x, "selected_smape": y,
   "selected_per_origin": [...], "notes": [...]}

Exit codes: 0 ok, 2 the input file is missing, malformed or too short.`;
