/**
 * `shardctl plan --all` (and the autopilot's plan, which runs the same code) forecasts every active
 * segment a step at a time, giving the event loop turns in between: an autopilot's leader heartbeat
 * (a 3 s TTL check) and a dashboard keep running while thousands of segments are forecast.
 */
import { describe, expect, it } from "vitest";
import { runPlan, type PlacementSource } from "../../../src/commands/plan.js";
import { defaultConfig } from "../../../src/config.js";
import { AccessWindows } from "../../../src/engine/access-windows.js";
import { defaultZoneMatrix } from "../../../src/engine/latency.js";
import { initialLayout } from "../../../src/engine/location-map.js";
import { withTicker } from "../../helpers/loop-gaps.js";

const SEGMENTS = 4096;
const ZONES = ["a", "b", "c"];
const NOW = Date.UTC(2026, 5, 1, 12);

describe("runPlan on many active segments", () => {
  it("gives the event loop turns while it forecasts them", async () => {
    const config = { ...defaultConfig(), segments: SEGMENTS, zones: ZONES };
    const nodes = ZONES.map((zone, i) => ({ id: `node-${i + 1}`, zone, address: `127.0.0.1:${7401 + i}` }));
    const map = initialLayout(SEGMENTS, nodes, { shardsPerNode: 4, now: 0 });
    // an hour of access to 300 segments, a few a minute each, mostly from one zone
    const w = new AccessWindows({ segmentCount: SEGMENTS, zones: ZONES });
    for (let k = 0; k < 300; k++) {
      const segment = k * 13;
      for (let m = 0; m < 60; m++)
        for (let e = 0; e < 1 + ((k + m) % 4); e++)
          w.record(segment, e === 0, (k + (e === 3 ? 1 : 0)) % 3, NOW - 3_600_000 + m * 60_000 + e * 1000);
    }
    const source: PlacementSource = {
      loadMap: async () => ({ map, version: 1 }),
      accessWindows: () => w,
      latencyMatrix: (zones) => ({ matrix: defaultZoneMatrix(zones), note: "latency: the default matrix" }),
      segmentBytes: () => 1 << 20,
      notes: () => [],
      close: async () => {},
    };
    const {
      value: plan,
      ms: total,
      gaps,
    } = await withTicker(() => runPlan({ all: true }, { config, source, clock: { now: () => NOW } }));
    expect(plan.assessments.length).toBeGreaterThan(0);
    expect(plan.inputs.notes.join("\n")).toMatch(
      /full backtests for the 50 busiest segment\(s\).* other 250/,
    );
    // the loop ran between the forecasts, not only after all of them
    expect(gaps.length).toBeGreaterThan(5);
    expect(Math.max(...gaps)).toBeLessThan(total / 3);
  });
});
