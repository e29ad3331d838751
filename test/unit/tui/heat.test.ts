import { describe, expect, it } from "vitest";
import { heatLevel, levelRate, RAMP_256, stripAnsi } from "../../../src/tui/ansi.js";
import { renderChart } from "../../../src/tui/chart.js";
import { hottestRow, rowOfSegment, segmentGrid, segmentsOfShard, shardGrid } from "../../../src/tui/heat.js";
import { heatPlotWidth, renderHeatRow, renderLegend } from "../../../src/tui/heat-render.js";
import { layoutFor } from "../../../src/tui/layout.js";
import { frameModel, initialNav } from "../../../src/tui/view-model.js";
import { makeSnapshot } from "./fixtures.js";

describe("heat grid aggregation", () => {
  it("bands 100,000 segments into the rows given, each cell the max over its band, so one hot segment lights its band", () => {
    // Given 100,000 segments with one hot segment (reads) and one warm one (writes)
    const snap = makeSnapshot({
      segments: 100_000,
      shards: 40,
      columns: 3,
      rates: { 77_777: [900, 0], 5: [0, 3] },
    });
    // When they are aggregated into 40 rows
    const grid = segmentGrid(snap.heat, { rows: 40, columns: 5 });
    // Then every row covers 2,500 segments and the hot band is the hottest row
    expect(grid.rows).toHaveLength(40);
    expect(grid.bandSize).toBe(2500);
    expect(grid.aggregation).toBe("max");
    const hot = grid.rows[hottestRow(grid)];
    expect(hot.firstSegment).toBeLessThanOrEqual(77_777);
    expect(hot.lastSegment).toBeGreaterThanOrEqual(77_777);
    expect(hot.hottestSegment).toBe(77_777);
    expect(hot.peak).toBe(900);
    expect(grid.rows[0].writes[4]).toBe(3);
    expect(grid.maxRate).toBe(900);
    // columns the history does not have yet are -1 (drawn blank), newest on the right
    expect(Array.from(grid.rows[0].reads.slice(0, 2))).toEqual([-1, -1]);
    expect(rowOfSegment(grid, 77_777)).toBe(hottestRow(grid));
  });

  it("gives a shard row the sum over its segments and scrolls to keep the selection visible", () => {
    const snap = makeSnapshot({
      segments: 64,
      shards: 16,
      columns: 2,
      rates: { 0: [1, 1], 1: [3, 0], 63: [5, 5] },
    });
    const grid = shardGrid(snap.heat, snap.shards, { rows: 4, columns: 2, selected: 15 });
    expect(grid.aggregation).toBe("sum");
    expect(grid.totalRows).toBe(16);
    expect(grid.offset).toBe(12);
    expect(grid.rows.map((r) => r.label)).toEqual(["shard-13", "shard-14", "shard-15", "shard-16"]);
    expect(grid.rows[3].reads[1]).toBe(5);
    expect(grid.rows[3].hottestSegment).toBe(63);
    const top = shardGrid(snap.heat, snap.shards, { rows: 4, columns: 2, selected: 0 });
    expect(top.rows[0].reads[0]).toBe(4);
    expect(top.rows[0].writes[0]).toBe(1);
    expect(top.rows[0].hottestSegment).toBe(1);
  });

  it("drills into a shard's own segments, one row each when they fit", () => {
    const snap = makeSnapshot({ segments: 64, shards: 4, rates: { 20: [7, 0] } });
    const segs = segmentsOfShard(snap.shards[1]);
    const grid = segmentGrid(snap.heat, { rows: 30, columns: 10, segments: segs });
    expect(grid.rows).toHaveLength(16);
    expect(grid.rows[0].label).toBe("16");
    expect(grid.rows[hottestRow(grid)].label).toBe("20");
  });

  it("maps rates onto the ramp on a log scale and survives hostile numbers", () => {
    const n = RAMP_256.length;
    expect(heatLevel(0, 100, n)).toBe(0);
    expect(heatLevel(100, 100, n)).toBe(n - 1);
    expect(heatLevel(1e9, 100, n)).toBe(n - 1);
    expect(heatLevel(Number.NaN, 100, n)).toBe(0);
    expect(heatLevel(-5, 100, n)).toBe(0);
    expect(heatLevel(5, 0, n)).toBe(0);
    // log: 1/s of a 10,000/s maximum is still visibly above the floor
    expect(heatLevel(1, 10_000, n)).toBeGreaterThan(1);
    let prev = 0;
    for (const r of [0.1, 1, 10, 100, 1000]) {
      const l = heatLevel(r, 1000, n);
      expect(l).toBeGreaterThanOrEqual(prev);
      prev = l;
    }
    expect(levelRate(n - 1, 1000, n)).toBeCloseTo(1000, 0);
  });

  it("draws a row as ▀ cells with reads in the foreground and writes in the background", () => {
    const snap = makeSnapshot({ segments: 4, shards: 1, columns: 2, rates: { 1: [100, 1] } });
    const grid = segmentGrid(snap.heat, { rows: 4, columns: 2 });
    const line = renderHeatRow(grid.rows[1], {
      width: 40,
      maxRate: grid.maxRate,
      colour: true,
      selected: false,
      hottest: true,
      hotRate: 50,
    });
    expect(line).toContain(`\x1b[38;5;${RAMP_256[RAMP_256.length - 1]}m`); // hottest reads
    expect(line).toContain("\x1b[48;5;"); // writes as the background
    expect(stripAnsi(line)).toHaveLength(40);
    expect(stripAnsi(line)).toMatch(/^ 1 +▀{14} +101\/s ◀$/);
    const mono = renderHeatRow(grid.rows[0], {
      width: 40,
      maxRate: grid.maxRate,
      colour: false,
      selected: true,
      hottest: false,
      hotRate: 50,
    });
    expect(mono).toMatch(/^▶0 +·{14} +0\/s {2}$/);
    expect(heatPlotWidth(40)).toBe(14);
    const legend = renderLegend(grid, 80, false, 50).map(stripAnsi);
    expect(legend[0]).toMatch(/^0 ·░▒▓█ 100\/s \(log; mid [\d.]+\/s\)/);
    expect(legend[1]).toContain("cell = the segment");
  });
});

describe("forecast chart", () => {
  it("renders exactly width × height with recent, forecast and the interval band", () => {
    const lines = renderChart(
      { recent: [0, 5, 10], mean: [10, 10], lower: [5, 5], upper: [20, 20] },
      { width: 16, height: 4, colour: false },
    );
    expect(lines).toHaveLength(4);
    for (const l of lines) expect(Array.from(l)).toHaveLength(16);
    // 3 recent points (█, from 0 up), then 2 forecast points (▓ without colour) under a ░ interval
    expect(lines).toEqual(["   20│        ░░", "     │        ░░", "     │       █▓▓", "    0│      ██▓▓"]);
  });

  it("stays within its box with empty and non-finite input", () => {
    const lines = renderChart(
      { recent: [], mean: [Number.NaN], lower: [], upper: [Number.POSITIVE_INFINITY] },
      { width: 10, height: 2, colour: true },
    );
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(Array.from(stripAnsi(l)).length).toBeLessThanOrEqual(10);
  });
});

describe("layout and view model", () => {
  it("keeps every panel inside the terminal and the frame one size", () => {
    for (const [w, h] of [
      [60, 16],
      [160, 50],
      [300, 120],
    ]) {
      const L = layoutFor(w, h, 3, false);
      expect(L.leftWidth + 1 + L.rightWidth).toBe(w);
      expect(1 + L.mainHeight + L.bottomHeight + 2).toBe(h);
      expect(L.heatRows).toBeGreaterThan(0);
    }
  });

  it("selects the hottest row first and focuses its hottest segment", () => {
    const snap = makeSnapshot({ segments: 4096, shards: 12, rates: { 3000: [80, 20] } });
    const m = frameModel(snap, initialNav, 160, 49);
    expect(m.grid.rows[m.selectedRow].hottestSegment).toBe(3000);
    expect(m.focus).toEqual({ kind: "segment", segment: 3000 });
    expect(m.actionShard?.id).toBe("shard-9");
  });
});
