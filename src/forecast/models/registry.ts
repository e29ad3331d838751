/**
 * Every model by name, each wrapped so that a failed or wild fit falls back
 * to seasonal naive. FULL_CANDIDATES is what hot series are backtested with;
 * CHEAP_CANDIDATES is the cold-series tier.
 */
import { drift, meanModel, naive, seasonalNaive, weeklyNaive } from "./baselines.js";
import { arima } from "./arima.js";
import { ets, etsFixed } from "./ets.js";
import { guarded } from "./guarded.js";
import { mlp } from "./mlp.js";
import { prophet } from "./prophet.js";
import type { Forecaster } from "../types.js";

export const MODELS: Record<string, Forecaster> = Object.fromEntries(
  [seasonalNaive, weeklyNaive, naive, drift, meanModel, etsFixed, ets, arima, prophet, mlp].map((m) => [
    m.name,
    guarded(m),
  ]),
);

export type ModelName =
  | "seasonal_naive"
  | "weekly_naive"
  | "naive"
  | "drift"
  | "mean"
  | "ets_fixed"
  | "ets"
  | "arima"
  | "prophet"
  | "mlp";

export const FULL_CANDIDATES: readonly ModelName[] = [
  "seasonal_naive",
  "weekly_naive",
  "drift",
  "ets",
  "arima",
  "prophet",
  "mlp",
];
export const CHEAP_CANDIDATES: readonly ModelName[] = ["seasonal_naive", "weekly_naive", "ets_fixed"];

export function modelByName(name: string): Forecaster {
  const m = MODELS[name];
  if (!m) throw new Error(`unknown model ${name}`);
  return m;
}
