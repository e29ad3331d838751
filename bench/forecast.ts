/**
 * `npm run bench -- forecast [--series N] [--points P]`
 *
 * 1. Fit + forecast time per series for every model, on synthetic 5-minute
 *    series with a daily cycle, as a ratio to the seasonal naive baseline.
 * 2. The scale figure: forecastMany over 10,000 series of 2,000 points each
 *    (skewed volumes, some never accessed), cost-tiered, one thread.
 * Ends with one JSON line: series_10k_s (wall clock), series_10k_cpu_s (this
 * process's CPU time: the same on an idle machine, and the honest figure when
 * other jobs share the two cores), per-model ms, tier counts, load average.
 */
import { loadavg } from "node:os";
import { forecastMany, type NamedSeries } from "../src/forecast/many.js";
import { MODELS } from "../src/forecast/models/registry.js";
import { gaussian, seededRandom } from "../src/forecast/stats.js";
import { emit, log, now, round } from "./_util.js";

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const SERIES = option("--series", 10_000);
const POINTS = option("--points", 2_000);
const INTERVAL = 300;
const SEASON = 288;
const HORIZON = 288;

/** Access-like series: a daily cycle, a slow trend, noise, and a volume drawn from a heavy tail. */
function synthetic(rand: () => number, points: number, volume: number): Float64Array {
  const v = new Float64Array(points);
  const phase = rand() * 2 * Math.PI;
  const trend = (rand() - 0.5) * 0.002;
  for (let i = 0; i < points; i++) {
    const daily = 1 + 0.6 * Math.sin((2 * Math.PI * i) / SEASON + phase);
    const level = volume * daily * (1 + trend * i) + volume * 0.2 * gaussian(rand);
    v[i] = Math.max(0, Math.round(level));
  }
  return v;
}

const rand = seededRandom(7);

// ---- 1. per-model cost ----
const sample = Array.from({ length: 12 }, () => synthetic(rand, POINTS, 50 + rand() * 500));
const perModelMs: Record<string, number> = {};
for (const [name, model] of Object.entries(MODELS)) {
  // warm-up fit so the JIT does not bill the first model
  model
    .fit({ values: sample[0], intervalSeconds: INTERVAL, season: SEASON, horizon: HORIZON })
    .forecast(HORIZON);
  // CPU time, not wall time: the figures must not depend on what else the machine runs.
  // Cheap models are repeated until 200 ms of CPU so that their figure is not timer noise.
  const cpuBefore = process.cpuUsage();
  let fits = 0;
  let usedMs = 0;
  do {
    for (const values of sample) {
      model.fit({ values, intervalSeconds: INTERVAL, season: SEASON, horizon: HORIZON }).forecast(HORIZON);
      fits++;
    }
    const used = process.cpuUsage(cpuBefore);
    usedMs = (used.user + used.system) / 1000;
  } while (usedMs < 200);
  perModelMs[name] = usedMs / fits;
}
const baseline = perModelMs["seasonal_naive"];
log("model            CPU ms/series  x seasonal_naive");
for (const [name, ms] of Object.entries(perModelMs)) {
  log(`${name.padEnd(16)} ${ms.toFixed(3).padStart(9)}  ${(ms / baseline).toFixed(1).padStart(8)}`);
}

// ---- 2. 10,000 series ----
log(`generating ${SERIES} series x ${POINTS} points ...`);
const series: NamedSeries[] = [];
for (let i = 0; i < SERIES; i++) {
  // heavy-tailed volumes: most segments are cold, a few are hot, some are never touched
  const u = rand();
  const volume = u < 0.05 ? 0 : Math.exp(gaussian(rand) * 1.5 + 2);
  series.push({ id: `segment-${i}`, values: synthetic(rand, POINTS, volume) });
}
log("forecasting ...");
const loadBefore = loadavg()[0];
const cpuStart = process.cpuUsage();
const start = now();
const results = forecastMany(series, { intervalSeconds: INTERVAL, horizon: HORIZON });
const seconds = (now() - start) / 1000;
const cpu = process.cpuUsage(cpuStart);
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
const tiers: Record<string, number> = {};
const models: Record<string, number> = {};
let nonFinite = 0;
for (const r of results) {
  tiers[r.tier] = (tiers[r.tier] ?? 0) + 1;
  models[r.model] = (models[r.model] ?? 0) + 1;
  for (const arr of [r.forecast.mean, r.forecast.lower, r.forecast.upper]) {
    for (let i = 0; i < arr.length; i++) if (!Number.isFinite(arr[i])) nonFinite++;
  }
}
log(
  `${SERIES} series x ${POINTS} points: ${seconds.toFixed(1)} s wall, ${cpuSeconds.toFixed(1)} s CPU (tiers ${JSON.stringify(tiers)}, models ${JSON.stringify(models)})`,
);
emit({
  series: SERIES,
  points: POINTS,
  horizon: HORIZON,
  series_10k_s: round(seconds * (10_000 / SERIES), 2),
  series_10k_cpu_s: round(cpuSeconds * (10_000 / SERIES), 2),
  measured_s: round(seconds, 2),
  load_average_1m: round((loadBefore + loadavg()[0]) / 2, 2),
  tiers,
  models,
  non_finite: nonFinite,
  per_model_ms: Object.fromEntries(Object.entries(perModelMs).map(([k, v]) => [k, round(v, 3)])),
  per_model_ratio_to_seasonal_naive: Object.fromEntries(
    Object.entries(perModelMs).map(([k, v]) => [k, round(v / baseline, 1)]),
  ),
});
