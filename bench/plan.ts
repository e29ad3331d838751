/**
 * `npm run bench -- plan`: the forecasting step of `shardctl plan --all` (and
 * of the autopilot's plan, which runs the same code) on many active segments:
 * each segment's total forecast for the next horizon, split by the zones'
 * shares (demandSteps). Baseline, in the same run: full model selection for
 * every segment (what every plan did before the tiers), timed on the first
 * --baseline segments (default 256) and projected to all of them. Measured:
 * the tiers — full selection for the 50 busiest, the cheap tier for the rest —
 * on all --segments (default 4096), run in slices as runPlan does: the total
 * time and the longest the event loop was held. Ends with one JSON line.
 */
import { demandSteps, FULL_SELECTION_SEGMENTS, type SegmentZoneSeries } from "../src/commands/plan.js";
import { runAtOnce, runInSlices } from "../src/slices.js";
import { emit, log, now, numberArg, round, ticking } from "./_util.js";

const SEGMENTS = numberArg("segments", 4096);
const BASELINE = Math.min(SEGMENTS, numberArg("baseline", 256));
const ZONES = ["a", "b", "c"];

// 60 one-minute intervals per zone (the windows' minute level), skewed volumes (Zipf-like), each
// segment's dominant zone changing half-way for a third of them; a fixed LCG: every run the same
let seed = 12345;
const rnd = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296;
const series: SegmentZoneSeries[] = Array.from({ length: SEGMENTS }, (_, k) => {
  const rate = 200 / Math.pow(k + 1, 0.8) + 0.5;
  const perZone: Record<string, Float64Array> = {};
  for (const [zi, z] of ZONES.entries()) {
    perZone[z] = Float64Array.from({ length: 60 }, (_, i) => {
      const dominant = k % 3 === 0 && i >= 30 ? (k + 1) % 3 : k % 3;
      const share = zi === dominant ? 0.7 : 0.15;
      return Math.round(rate * share * (0.6 + 0.8 * rnd()));
    });
  }
  return { segment: k, perZone };
});

log(`baseline: full model selection for each of ${BASELINE} segments…`);
const t = now();
runAtOnce(demandSteps(series.slice(0, BASELINE), ZONES, 60, 3600, undefined, Infinity));
const fullPerSegmentMs = (now() - t) / BASELINE;
log(
  `  ${round(fullPerSegmentMs, 1)} ms a segment: ${round((fullPerSegmentMs * SEGMENTS) / 1000, 1)} s for ${SEGMENTS}`,
);

log(
  `tiers: full selection for the ${FULL_SELECTION_SEGMENTS} busiest of ${SEGMENTS}, the cheap tier for the rest, in slices…`,
);
const {
  ms: tieredMs,
  gaps,
  value: result,
} = await ticking(() => runInSlices(demandSteps(series, ZONES, 60, 3600)));
log(
  `  ${round(tieredMs / 1000, 2)} s; the event loop held at most ${round(Math.max(...gaps), 1)} ms at a time`,
);
log(`  ${result.note}`);
emit({
  bench: "plan",
  segments: SEGMENTS,
  full_selection_segments: FULL_SELECTION_SEGMENTS,
  tiered_s: round(tieredMs / 1000, 2),
  baseline_segments: BASELINE,
  full_per_segment_ms: round(fullPerSegmentMs, 2),
  full_projected_s: round((fullPerSegmentMs * SEGMENTS) / 1000, 1),
  speedup: round((fullPerSegmentMs * SEGMENTS) / tieredMs, 1),
  max_loop_hold_ms: round(Math.max(...gaps), 1),
});
