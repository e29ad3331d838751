import { describe, expect, it } from "vitest";
import { defaultConfig } from "../../../src/config.js";
import { AccessWindows } from "../../../src/engine/access-windows.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { runPredict } from "../../../src/commands/predict.js";
import { sparkline } from "../../../src/commands/chart.js";

const config = { ...defaultConfig(), segments: 256 };
const now = Date.UTC(2026, 0, 2, 12);

function windowsWithTraffic() {
  const w = new AccessWindows({ segmentCount: 256, zones: config.zones });
  const seg = new Segmenter(256).segmentOf("cart:hot");
  // an hour of per-minute traffic up to the minute that has just begun at `now` (nothing in it
  // yet): zone b steady at 30/min, zone a rising 0 → 59/min
  for (let m = 0; m < 60; m++) {
    const t = now - (60 - m) * 60_000;
    w.record(seg, false, 1, t, 30);
    if (m > 0) w.record(seg, true, 0, t, m);
  }
  return { w, seg };
}

describe("predict (predict_access_pattern on the windows)", () => {
  it("forecasts per zone from the minute level, with intervals around the mean", () => {
    const { w, seg } = windowsWithTraffic();
    const p = runPredict({ key: "cart:hot", horizon: 10, json: true }, { config, windows: w, now });
    expect(p.segment).toBe(seg);
    expect(p.intervalSeconds).toBe(60);
    expect(p.horizon).toBe(10);
    expect(Object.keys(p.zones)).toEqual(["a", "b", "c"]);
    expect(p.zones.b.mean[0]).toBeCloseTo(30, 0);
    expect(p.zones.a.mean[9]).toBeGreaterThan(50); // the rise goes on
    expect(p.zones.c.mean.every((x) => x === 0)).toBe(true);
    for (const f of Object.values(p.zones)) {
      f.mean.forEach((m, i) => {
        expect(Number.isFinite(m)).toBe(true);
        expect(f.lower[i]).toBeLessThanOrEqual(m + 1e-9);
        expect(f.upper[i]).toBeGreaterThanOrEqual(m - 1e-9);
      });
    }
  });

  it("answers one zone with --zone, and refuses an unknown zone, key or resolution", () => {
    const { w } = windowsWithTraffic();
    expect(
      Object.keys(runPredict({ key: "cart:hot", zone: "b", json: true }, { config, windows: w, now }).zones),
    ).toEqual(["b"]);
    expect(() =>
      runPredict({ key: "cart:hot", zone: "mars", json: true }, { config, windows: w, now }),
    ).toThrow(/unknown origin zone/);
    expect(() => runPredict({ key: "", json: true }, { config, windows: w, now })).toThrow(/empty/);
    expect(() =>
      runPredict({ key: "k", resolutionSeconds: 7, json: true }, { config, windows: w, now }),
    ).toThrow(/7 s resolution/);
    // further ahead than the level's history (60 one-minute slots), and absurdly far: refused
    expect(runPredict({ key: "k", horizon: 60, json: true }, { config, windows: w, now }).horizon).toBe(60);
    for (const horizon of [61, 99_999_999_999])
      expect(() => runPredict({ key: "k", horizon, json: true }, { config, windows: w, now })).toThrow(
        /longer than the 60 intervals/,
      );
  });

  it("draws sparklines on a shared scale", () => {
    expect(sparkline([0, 1, 2, 4], 4)).toBe(" ▃▅█");
    expect(sparkline([1e-13, 8])).toBe(" █");
  });
});
