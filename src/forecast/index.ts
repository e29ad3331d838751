/** The forecasting library's public surface. Pure: callers bring the numbers in. */
export type { Forecast, FittedModel, Forecaster, SeriesInput } from "./types.js";
export { INTERVAL_LEVEL, INTERVAL_Z } from "./types.js";
export { predictAccessPattern, predictAccessPatternSteps } from "./access.js";
export { completeNewest, completeNewestEach, elapsedFraction } from "./partial.js";
export type { AccessPatternForecast, AccessPatternOptions, ZoneForecast } from "./access.js";
export { forecastMany, hotSeries } from "./many.js";
export type { ManyOptions, ManyResult, NamedSeries, Tier } from "./many.js";
export { ModelSelectionCache } from "./cache.js";
export type { CacheOptions } from "./cache.js";
export { selectModel, selectModelSteps, forecasterFor, chooseFromBacktests } from "./select.js";
export type { ModelChoice, Selection, SelectOptions } from "./select.js";
export { evaluateSelection, evaluationPlan } from "./evaluate.js";
export type { Evaluation, EvaluationOptions } from "./evaluate.js";
export { backtestModel, planOrigins, defaultOriginCount, minTrainingPoints } from "./backtest.js";
export type { ModelBacktest, OriginPlan, OriginScore } from "./backtest.js";
export { mase, smape, seasonalNaiveMae } from "./metrics.js";
export { detectSeason, seasonalStrength, calendarPeriods } from "./season.js";
export { parseSeriesCsv, parseTimestamp } from "./csv.js";
export type { ParsedSeries, ParseOptions } from "./csv.js";
export { MODELS, FULL_CANDIDATES, CHEAP_CANDIDATES, modelByName } from "./models/registry.js";
export type { ModelName } from "./models/registry.js";
export {
  zoneShares,
  recentShares,
  shareSurprise,
  shareGroups,
  shareGroupsSteps,
  groupCounts,
  chooseShareSeason,
  chiSquareQuantile,
  normalQuantile,
} from "./zone-shares.js";
export type {
  ZoneShareOptions,
  ZoneShares,
  ShareSurprise,
  ShareSeasonChoice,
  ShareGroupOptions,
  ShareGroups,
} from "./zone-shares.js";
