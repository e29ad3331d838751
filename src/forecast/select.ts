/**
 * Model selection by rolling-origin backtest: every candidate is scored by
 * MASE over the same origins, and the lowest mean MASE wins — unless an
 * inverse-MASE ensemble of the top three scores lower still.
 */
import { runAtOnce } from "../engine/steps.js";
import { UsageError } from "../errors.js";
import {
  backtestModelSteps,
  defaultOriginCount,
  minTrainingPoints,
  planOrigins,
  scoreForecasts,
  type ModelBacktest,
  type OriginPlan,
} from "./backtest.js";
import { combine, ensembleOf, inverseMaseWeights, type WeightedMember } from "./ensemble.js";
import { FULL_CANDIDATES, modelByName } from "./models/registry.js";
import type { Forecaster, SeriesInput } from "./types.js";

const ENSEMBLE_SIZE = 3;

/** What was chosen: one model (a single member of weight 1) or an ensemble. */
export interface ModelChoice {
  name: string;
  members: WeightedMember[];
}

export interface SelectOptions {
  horizon: number;
  candidates?: readonly string[];
  origins?: number;
  /** Allow an ensemble of the best models (default true). */
  ensemble?: boolean;
}

export interface Selection {
  choice: ModelChoice;
  /** Backtest MASE of the choice on the selection origins (in-sample for the choice itself). */
  mase: number;
  results: ModelBacktest[];
  plan: OriginPlan;
}

export function forecasterFor(choice: ModelChoice): Forecaster {
  if (choice.members.length === 1) return modelByName(choice.members[0].name);
  return ensembleOf(choice.members.map((m) => ({ model: modelByName(m.name), weight: m.weight })));
}

export function selectionPlan(series: SeriesInput, horizon: number, origins?: number): OriginPlan {
  return planOrigins(
    series.values.length,
    horizon,
    origins ?? defaultOriginCount(horizon),
    minTrainingPoints(series.season),
  );
}

/** Picks from already-computed backtests: the best single model, or the ensemble if it scores lower. */
export function chooseFromBacktests(
  series: SeriesInput,
  plan: OriginPlan,
  results: ModelBacktest[],
  allowEnsemble = true,
): { choice: ModelChoice; mase: number; ensemble?: ModelBacktest } {
  const best = results.reduce((a, b) => (b.mase < a.mase ? b : a));
  let choice: ModelChoice = { name: best.name, members: [{ name: best.name, weight: 1 }] };
  let score = best.mase;
  let ensemble: ModelBacktest | undefined;
  if (allowEnsemble && results.length > 1 && plan.origins.length > 0) {
    const members = inverseMaseWeights(results, ENSEMBLE_SIZE);
    const byName = new Map(results.map((r) => [r.name, r]));
    const forecasts = plan.origins.map(
      (_, i) =>
        combine(
          members.map((m) => {
            const f = byName.get(m.name)!.forecasts[i];
            return { mean: f, lower: f, upper: f };
          }),
          members.map((m) => m.weight),
        ).mean,
    );
    ensemble = scoreForecasts(series, plan, forecasts, "ensemble");
    if (members.length > 1 && ensemble.mase < score) {
      choice = { name: "ensemble", members };
      score = ensemble.mase;
    }
  }
  return { choice, mase: score, ensemble };
}

export function selectModel(series: SeriesInput, opts: SelectOptions): Selection {
  return runAtOnce(selectModelSteps(series, opts));
}

/**
 * selectModel a step at a time: a step per candidate's fit at each origin (a few ms each on a
 * short series), for a caller that must not hold its thread for the whole selection (runInSlices).
 */
export function* selectModelSteps(
  series: SeriesInput,
  opts: SelectOptions,
): Generator<void, Selection, void> {
  const plan = selectionPlan(series, opts.horizon, opts.origins);
  const candidates = opts.candidates ?? FULL_CANDIDATES;
  if (candidates.length === 0) throw new UsageError("model selection needs at least one candidate model");
  if (plan.origins.length === 0) {
    // too short to backtest: the baseline is the only defensible choice
    return {
      choice: { name: "seasonal_naive", members: [{ name: "seasonal_naive", weight: 1 }] },
      mase: NaN,
      results: [],
      plan,
    };
  }
  const results: ModelBacktest[] = [];
  for (const name of candidates) results.push(yield* backtestModelSteps(series, modelByName(name), plan));
  const { choice, mase } = chooseFromBacktests(series, plan, results, opts.ensemble ?? true);
  return { choice, mase, results, plan };
}
