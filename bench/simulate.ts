/**
 * `npm run bench -- simulate`: builds follow-the-sun traces from the real
 * series in ../shared/data/series (and, held out, from the NASA request log
 * in ../shared/data/traces), replays each through the four placement
 * policies, and reports the comparison and the simulator's throughput.
 * The baseline is the static policy (and the oracle's lower bound, with the
 * planner's cooldown and without it), in the same run. Ends with one JSON line.
 *
 * Options: --events N (default 300000), --keys N (default 20), --seed S (default 1).
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { LatencyModel, parseZoneMatrix } from "../src/engine/latency.js";
import { buildTraceFromRequests, buildTraceFromSeries } from "../src/sim/build-trace.js";
import { engineForecaster } from "../src/sim/forecaster.js";
import { POLICIES, simulate, type SimResult } from "../src/sim/simulate.js";
import { parseTrace } from "../src/sim/trace.js";
import { readRequests, readSeriesDir } from "../src/commands/simulate.js";
import { emit, log, now, numberArg, round } from "./_util.js";

const here = dirname(fileURLToPath(import.meta.url));
const shared = join(here, "..", "..", "shared", "data");
const events = numberArg("events", 300_000);
const keys = numberArg("keys", 20);
const seed = numberArg("seed", 1);

// Three zones with unequal distances (ms), one node per zone.
const matrix = parseZoneMatrix({
  zones: ["a", "b", "c"],
  rtt_ms: [
    [1, 50, 80],
    [50, 1, 60],
    [80, 60, 1],
  ],
});
const latency = LatencyModel.fromZoneMatrix(matrix);

interface Run {
  name: string;
  result: SimResult;
  seconds: number;
  eventsPerS: number;
}

function run(name: string, csv: string): Run {
  const trace = parseTrace(csv, matrix.zones);
  const { forecast } = engineForecaster();
  const t0 = now();
  const result = simulate(trace, latency, forecast);
  const seconds = (now() - t0) / 1000;
  const eventsPerS = trace.length / seconds;
  log(
    `${name}: ${trace.length} events, ${trace.keys.length} keys, ${result.intervals} intervals, replayed in ${seconds.toFixed(1)} s (${Math.round(eventsPerS)} events/s)`,
  );
  const oracle = result.policies.oracle!.mean_ms;
  for (const p of POLICIES) {
    const r = result.policies[p]!;
    log(
      `  ${p.padEnd(10)} mean ${r.mean_ms.toFixed(2).padStart(6)} ms  p99 ${r.p99_ms.toFixed(1).padStart(5)} ms  ` +
        `migrations ${String(r.migrations).padStart(6)}  moved ${(r.bytes_moved / 2 ** 30).toFixed(2)} GiB  vs oracle ${((r.mean_ms / oracle - 1) * 100).toFixed(1)}%`,
    );
  }
  const free = result.oracle_without_cooldown;
  if (free)
    log(
      `  oracle without the cooldown: mean ${free.mean_ms.toFixed(2)} ms, migrations ${free.migrations} (predictive ${((result.policies.predictive!.mean_ms / free.mean_ms - 1) * 100).toFixed(1)}% above it)`,
    );
  return { name, result, seconds, eventsPerS };
}

const seriesDir = join(shared, "series");
if (!existsSync(seriesDir)) {
  log(`no series at ${seriesDir}`);
  process.exit(2);
}
const series = readSeriesDir(seriesDir);
log(`building traces from ${series.length} series (${events} events, ${keys} keys, seed ${seed})`);
const runs: Run[] = [];
runs.push(
  run(
    `series/${keys}keys/seed${seed}`,
    buildTraceFromSeries(series, { keys, zones: matrix.zones, events, seed }),
  ),
);
runs.push(
  run(
    `series/48keys/seed${seed + 1}`,
    buildTraceFromSeries(series, {
      keys: 48,
      zones: matrix.zones,
      events: Math.round(events / 3),
      seed: seed + 1,
    }),
  ),
);
const nasa = join(shared, "traces", "nasa_http_kennedy_19950801.csv");
if (existsSync(nasa)) {
  runs.push(
    run("held-out/nasa-http", buildTraceFromRequests(readRequests(nasa), { zones: matrix.zones, seed })),
  );
}

const pick = (r: Run, field: "mean_ms" | "p99_ms" | "migrations" | "bytes_moved") =>
  Object.fromEntries(POLICIES.map((p) => [p, round(r.result.policies[p]![field], 3)]));
const main = runs[0];
const figures: Record<string, unknown> = {
  bench: "simulate",
  trace: main.name,
  events: main.result.events,
  events_per_s: Math.round(main.eventsPerS),
  replay_s: round(main.seconds, 2),
  mean_ms: pick(main, "mean_ms"),
  p99_ms: pick(main, "p99_ms"),
  migrations: pick(main, "migrations"),
  bytes_moved: pick(main, "bytes_moved"),
  predictive_vs_reactive_mean: round(
    main.result.policies.predictive!.mean_ms / main.result.policies.reactive!.mean_ms,
    4,
  ),
  predictive_vs_oracle_mean: round(
    main.result.policies.predictive!.mean_ms / main.result.policies.oracle!.mean_ms,
    4,
  ),
  oracle_without_cooldown_mean_ms: round(main.result.oracle_without_cooldown?.mean_ms ?? NaN, 3),
  oracle_without_cooldown_migrations: main.result.oracle_without_cooldown?.migrations,
  static_vs_predictive_mean: round(
    main.result.policies.static!.mean_ms / main.result.policies.predictive!.mean_ms,
    4,
  ),
  others: runs.slice(1).map((r) => ({
    trace: r.name,
    events: r.result.events,
    events_per_s: Math.round(r.eventsPerS),
    mean_ms: pick(r, "mean_ms"),
    p99_ms: pick(r, "p99_ms"),
    migrations: pick(r, "migrations"),
    oracle_without_cooldown_mean_ms: round(r.result.oracle_without_cooldown?.mean_ms ?? NaN, 3),
  })),
};
emit(figures);
