/**
 * Honest accuracy measurement: every model is scored on the last few
 * rolling origins, and so is the *selection procedure* — at each origin,
 * selection sees only the data before it (its own inner backtest), so the
 * selected model's MASE is out of sample, not the minimum of the table.
 */
import {
  backtestModelSteps,
  defaultOriginCount,
  minTrainingPoints,
  planOrigins,
  scoreForecasts,
  type ModelBacktest,
  type OriginPlan,
} from "./backtest.js";
import { combine } from "./ensemble.js";
import { FULL_CANDIDATES, modelByName } from "./models/registry.js";
import { chooseFromBacktests, selectModelSteps, selectionPlan, type ModelChoice } from "./select.js";
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

/** How far an evaluation has got: model fits done of the total, and what is being done. */
export interface EvaluationProgress {
  fits: number;
  totalFits: number;
  /** "backtest ets" (every model at the outer origins) or "selection at origin 2 of 3". */
  stage: string;
}

export function evaluateSelection(
  series: SeriesInput,
  opts: EvaluationOptions,
  onProgress?: (p: EvaluationProgress) => void,
): Evaluation {
  const steps = evaluateSelectionSteps(series, opts);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    onProgress?.(r.value);
  }
}

/** evaluateSelection a model fit at a time, yielding its progress after each fit. */
export function* evaluateSelectionSteps(
  series: SeriesInput,
  opts: EvaluationOptions,
): Generator<EvaluationProgress, Evaluation, void> {
  const candidates = opts.candidates ?? FULL_CANDIDATES;
  const plan = evaluationPlan(series, opts.horizon, opts.origins);
  const prefixes = plan.origins.map((origin): SeriesInput => ({
    ...series,
    values: series.values.subarray(0, origin),
  }));
  const innerFits = prefixes.map((p) => selectionPlan(p, plan.horizon, opts.origins).origins.length);
  const totalFits = candidates.length * (plan.origins.length + innerFits.reduce((a, b) => a + b, 0));
  let fits = 0;
  const models: ModelBacktest[] = [];
  for (const name of candidates) {
    const steps = backtestModelSteps(series, modelByName(name), plan);
    for (;;) {
      const r = steps.next();
      if (r.done) {
        models.push(r.value);
        break;
      }
      yield { fits: ++fits, totalFits, stage: `backtest ${name}` };
    }
  }
  const byName = new Map(models.map((m) => [m.name, m]));
  const choices: ModelChoice[] = [];
  const selectedForecasts: Float64Array[] = [];
  for (const [i, prefix] of prefixes.entries()) {
    const stage = `selection at origin ${i + 1} of ${prefixes.length}`;
    const steps = selectModelSteps(prefix, { horizon: plan.horizon, candidates, origins: opts.origins });
    let r = steps.next();
    for (; !r.done; r = steps.next()) yield { fits: ++fits, totalFits, stage };
    const inner = r.value;
    choices.push(inner.choice);
    // the chosen models' forecasts from this origin were already computed above
    selectedForecasts.push(
      combine(
        inner.choice.members.map((m) => {
          const f = byName.get(m.name)!.forecasts[i];
          return { mean: f, lower: f, upper: f };
        }),
        inner.choice.members.map((m) => m.weight),
      ).mean,
    );
  }
  const selected = scoreForecasts(series, plan, selectedForecasts, "selected");
  const whole = chooseFromBacktests(series, plan, models);
  return { plan, models, selected, choices, final: whole.choice };
}
