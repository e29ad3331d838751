/**
 * Honest accuracy measurement: every model is scored on the last few
 * rolling origins, and so is the *selection procedure* — at each origin,
 * selection sees only the data before it (its own inner backtest), so the
 * selected model's MASE is out of sample, not the minimum of the table.
 */
import {
  backtestModel,
  defaultOriginCount,
  minTrainingPoints,
  planOrigins,
  scoreForecasts,
  type ModelBacktest,
  type OriginPlan,
} from "./backtest.js";
import { combine } from "./ensemble.js";
import { FULL_CANDIDATES, modelByName } from "./models/registry.js";
import { chooseFromBacktests, selectModel, type ModelChoice } from "./select.js";
import type { SeriesInput } from "./types.js";

export interface EvaluationOptions {
  horizon: number;
  origins?: number;
  candidates?: readonly string[];
}

export interface Evaluation {
  plan: OriginPlan;
  models: ModelBacktest[];
  /** The out-of-sample score of "select, then forecast", origin by origin. */
  selected: ModelBacktest;
  /** What selection chose at each origin. */
  choices: ModelChoice[];
  /** What selection chooses on the whole series: the model used from now on. */
  final: ModelChoice;
}

/**
 * Outer origins leave at least half the series (and two seasons) for
 * training, so the inner selection at each origin has history to backtest on.
 */
export function evaluationPlan(series: SeriesInput, horizon: number, origins?: number): OriginPlan {
  const n = series.values.length;
  const minTrain = Math.max(minTrainingPoints(series.season), Math.floor(n / 2));
  return planOrigins(n, horizon, origins ?? defaultOriginCount(horizon), minTrain);
}

export function evaluateSelection(series: SeriesInput, opts: EvaluationOptions): Evaluation {
  const candidates = opts.candidates ?? FULL_CANDIDATES;
  const plan = evaluationPlan(series, opts.horizon, opts.origins);
  const models = candidates.map((name) => backtestModel(series, modelByName(name), plan));
  const byName = new Map(models.map((m) => [m.name, m]));
  const choices: ModelChoice[] = [];
  const selectedForecasts = plan.origins.map((origin, i) => {
    const prefix: SeriesInput = { ...series, values: series.values.subarray(0, origin) };
    const inner = selectModel(prefix, { horizon: plan.horizon, candidates, origins: opts.origins });
    choices.push(inner.choice);
    // the chosen models' forecasts from this origin were already computed above
    return combine(
      inner.choice.members.map((m) => {
        const f = byName.get(m.name)!.forecasts[i];
        return { mean: f, lower: f, upper: f };
      }),
      inner.choice.members.map((m) => m.weight),
    ).mean;
  });
  const selected = scoreForecasts(series, plan, selectedForecasts, "selected");
  const whole = chooseFromBacktests(series, plan, models);
  return { plan, models, selected, choices, final: whole.choice };
}
