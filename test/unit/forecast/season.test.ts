import { describe, expect, it } from "vitest";
import { calendarPeriods, detectSeason, seasonalStrength } from "../../../src/forecast/season.js";
import { HOURLY, sinusoidWithTrend, whiteNoise } from "./_series.js";

describe("calendarPeriods", () => {
  it("expresses a day and a week in the series' own interval", () => {
    expect(calendarPeriods(300)).toEqual([288, 2016]);
    expect(calendarPeriods(3600)).toEqual([24, 168]);
    expect(calendarPeriods(86400)).toEqual([7]);
    // 7000 s divides neither a day nor a week: no calendar period
    expect(calendarPeriods(7000)).toEqual([]);
  });
});

describe("detectSeason", () => {
  it("finds the daily cycle of hourly data", () => {
    expect(detectSeason(sinusoidWithTrend(24 * 10), HOURLY)).toBe(24);
  });

  it("finds the daily cycle of 5-minute data", () => {
    expect(detectSeason(sinusoidWithTrend(288 * 4, { season: 288 }), 300)).toBe(288);
  });

  it("falls back to the autocorrelation peak for a non-calendar period", () => {
    expect(detectSeason(sinusoidWithTrend(600, { season: 37, slope: 0 }), 60)).toBe(37);
  });

  it("finds nothing in white noise or a constant", () => {
    expect(detectSeason(whiteNoise(1000), HOURLY)).toBe(1);
    expect(detectSeason(new Float64Array(500).fill(3), HOURLY)).toBe(1);
    expect(detectSeason(new Float64Array(500), HOURLY)).toBe(1);
  });

  it("needs two full cycles", () => {
    expect(detectSeason(sinusoidWithTrend(40), HOURLY)).toBe(1);
  });
});

describe("seasonalStrength", () => {
  it("is near 1 for a clean cycle and near 0 for noise", () => {
    expect(seasonalStrength(sinusoidWithTrend(24 * 10, { noise: 0.5 }), 24)).toBeGreaterThan(0.9);
    expect(seasonalStrength(whiteNoise(24 * 10), 24)).toBeLessThan(0.3);
  });
});
