import { render } from "ink-testing-library";
import { describe, expect, it } from "vitest";
import { ForecastPanel } from "../../../src/tui/components/ForecastPanel.js";
import { HeatmapPanel } from "../../../src/tui/components/HeatmapPanel.js";
import { MigrationsPanel } from "../../../src/tui/components/MigrationsPanel.js";
import { NodesPanel } from "../../../src/tui/components/NodesPanel.js";
import { PlanPanel } from "../../../src/tui/components/PlanPanel.js";
import { HelpLine, StatusLine, TitleBar } from "../../../src/tui/components/StatusBar.js";
import { Frame } from "../../../src/tui/components/Frame.js";
import { RAMP_256 } from "../../../src/tui/ansi.js";
import { hottestRow, segmentGrid } from "../../../src/tui/heat.js";
import { frameModel, initialNav } from "../../../src/tui/view-model.js";
import { layoutLabel } from "../../../src/tui/source.js";
import type { MigrationRecord } from "../../../src/engine/migration.js";
import { blank, makeForecast, makeSnapshot, plain, plainLines } from "./fixtures.js";

describe("HeatmapPanel", () => {
  const snap = makeSnapshot({
    segments: 100_000,
    shards: 40,
    columns: 4,
    rates: { 50_001: [400, 100], 10: [1, 0] },
  });
  const grid = segmentGrid(snap.heat, { rows: 10, columns: 6 });

  it("shows bands, the hottest one marked, the legend with the aggregation and scale", () => {
    const { lastFrame } = render(
      <HeatmapPanel
        grid={grid}
        selected={0}
        hottest={hottestRow(grid)}
        width={60}
        height={14}
        colour={false}
        hotRate={50}
      />,
    );
    expect(blank(lastFrame())).toBe(
      [
        " ##### seg/row -##s                           now  peak/s",
        "▶#-####                      ····················    #.#/s",
        " #####-#####                 ····················      #/s",
        " #####-#####                 ····················      #/s",
        " #####-#####                 ····················      #/s",
        " #####-#####                 ····················      #/s",
        " #####-#####                 ████████████████████    ###/s ◀",
        " #####-#####                 ····················      #/s",
        " #####-#####                 ····················      #/s",
        " #####-#####                 ····················      #/s",
        " #####-#####                 ····················      #/s",
        "",
        "# ·░▒▓█ ###/s (log; mid ##/s)",
        "glyph = max(reads, writes) · cell = max over ##### segments…",
      ].join("\n"),
    );
  });

  it("colours reads as the foreground and writes as the background, hottest at the top of the ramp", () => {
    const { lastFrame } = render(
      <HeatmapPanel
        grid={grid}
        selected={0}
        hottest={hottestRow(grid)}
        width={60}
        height={14}
        colour={true}
        hotRate={50}
      />,
    );
    const hotLine = (lastFrame() ?? "").split("\n")[6];
    expect(hotLine).toContain(`38;5;${RAMP_256[RAMP_256.length - 1]}m`);
    expect(hotLine).toMatch(/48;5;\d+m/);
    expect(plain(hotLine)).toContain("500/s ◀");
  });

  it("says which shard it is drilled into", () => {
    const shard = snap.shards[20];
    const { lastFrame } = render(
      <HeatmapPanel
        grid={grid}
        selected={-1}
        hottest={-1}
        width={100}
        height={14}
        colour={false}
        hotRate={50}
        drilled={{ shard, zone: "c", now: snap.takenAt }}
      />,
    );
    expect(plain(lastFrame()).split("\n")[0]).toBe(
      "shard-21 on node-3 (zone c) · epoch 1 · never moved · segments 50000-52499 · esc back",
    );
  });
});

describe("NodesPanel", () => {
  it("lists zone, health, shards, load, resources and RTT per zone; an unreachable node says so", () => {
    const snap = makeSnapshot({ unreachable: ["node-2"] });
    const { lastFrame } = render(
      <NodesPanel nodes={snap.nodes} zones={snap.zones} width={100} height={6} colour={false} />,
    );
    expect(blank(lastFrame())).toBe(
      [
        "Nodes (rtt ms: model)",
        "node       zone  health      shards   acc/s   cpu         mem        disk    →a    →b    →c",
        "node-#     a     ok               #      ##   ##%   ###M/#.#G         ##%     #    ##    ##",
        "node-#     b     UNREACHABLE      #       -     -           -           -    ##     #    ##",
        "node-#     c     ok               #      ##   ##%   ###M/#.#G         ##%    ##    ##     #",
        "",
      ].join("\n"),
    );
  });

  it("shows measured round trips as measured, with their age, and marks the model's cells with *", () => {
    const snap = makeSnapshot();
    const at = snap.takenAt - 12_000;
    const nodes = snap.nodes.map((n, i) =>
      i === 0
        ? {
            ...n,
            rttMs: [1, 0.42, 57.6],
            rttMeasured: [false, true, true],
            rttSource: "measured" as const,
            rttMeasuredAt: at,
          }
        : n,
    );
    const { lastFrame } = render(
      <NodesPanel
        nodes={nodes}
        zones={snap.zones}
        width={100}
        height={5}
        colour={false}
        now={snap.takenAt}
      />,
    );
    const lines = plain(lastFrame()).split("\n");
    expect(lines[0].trimEnd()).toBe("Nodes (rtt ms: measured 12s ago; * model)");
    expect(lines[2]).toMatch(/node-1 .* 1\* +0\.4 +58$/);
    expect(lines[3]).toMatch(/node-2 .* 50\* +1\* +50\*$/);
  });

  it("says measured without stars when every cell was measured", () => {
    const snap = makeSnapshot();
    const nodes = snap.nodes.map((n) => ({
      ...n,
      rttMeasured: [true, true, true],
      rttSource: "measured" as const,
    }));
    const { lastFrame } = render(
      <NodesPanel nodes={nodes} zones={snap.zones} width={100} height={5} colour={false} />,
    );
    expect(plain(lastFrame()).split("\n")[0].trimEnd()).toBe("Nodes (rtt ms: measured)");
    expect(plain(lastFrame())).not.toContain("*");
  });

  it("says how many nodes do not fit", () => {
    const snap = makeSnapshot();
    const { lastFrame } = render(
      <NodesPanel nodes={snap.nodes} zones={snap.zones} width={90} height={4} colour={false} />,
    );
    expect(plain(lastFrame())).toContain("… 2 more node(s)");
  });
});

describe("MigrationsPanel", () => {
  it("shows in flight (phase, bytes, lag, elapsed) and recent (result, write pause)", () => {
    const snap = makeSnapshot();
    const { lastFrame } = render(
      <MigrationsPanel
        migrations={snap.migrations}
        now={snap.takenAt}
        width={70}
        height={4}
        colour={false}
      />,
    );
    expect(plainLines(lastFrame())).toEqual([
      "Migrations: 1 in flight, 1 recent",
      "▸ shard-2 node-2→node-3 copying 3.0M/8.0M lag 120 · 30s",
      "  shard-1 node-1→node-2 committed pause 42ms · 10m00s ago",
      "",
    ]);
  });

  it("shows journal records: unknown lag, a pending roll-forward, an aborted move with its reason", () => {
    const now = Date.UTC(2026, 0, 1, 12);
    const { lastFrame } = render(
      <MigrationsPanel
        migrations={{
          available: true,
          inFlight: [
            {
              id: "m3",
              shard: "shard-4",
              source: "node-1",
              target: "node-2",
              phase: "journaled",
              bytesCopied: 0,
              startedAt: now - 2_000,
            },
            {
              id: "m2",
              shard: "shard-3",
              source: "node-3",
              target: "node-1",
              phase: "committed",
              bytesCopied: 2048,
              lagEntries: 0,
              startedAt: now - 65_000,
              problem: "roll-forward pending: node-1 did not answer",
            },
          ],
          recent: [
            {
              id: "m1",
              shard: "shard-2",
              source: "node-2",
              target: "node-3",
              result: "aborted",
              finishedAt: now - 5_000,
              reason: "target node-3 (prepare) answered 409",
            },
          ],
        }}
        now={now}
        width={100}
        height={5}
        colour={false}
      />,
    );
    expect(plainLines(lastFrame())).toEqual([
      "Migrations: 2 in flight, 1 recent",
      "▸ shard-4 node-1→node-2 journaled 0B · 2s",
      "▸ shard-3 node-3→node-1 committed 2.0K lag 0 · 1m05s (roll-forward pending: node-1 did not answer)",
      "  shard-2 node-2→node-3 aborted · 5s ago (target node-3 (prepare) answered 409)",
      "",
    ]);
  });

  it("names splits and merges by what they do, and a move by its shard and nodes", () => {
    const now = Date.UTC(2026, 0, 1, 12);
    const base = {
      source: "node-1",
      target: "node-1",
      finishedAt: now - 3_000,
      result: "committed" as const,
    };
    const split: MigrationRecord = {
      ...record("m1", "shard-3"),
      layout: {
        op: {
          kind: "split",
          shard: "shard-3",
          node: "node-1",
          reason: "hot-segment",
          pieces: [
            { id: "shard-3", ranges: [[0, 10]], load: 1 },
            { id: "shard-13", ranges: [[10, 11]], load: 9 },
          ],
        },
        pieceNodes: { "shard-13": "node-1" },
        epochs: { "shard-3": 1 },
        nodes: { "shard-3": "node-1" },
      },
    };
    const merge: MigrationRecord = {
      ...record("m2", "shard-6"),
      source: "node-2",
      target: "node-2",
      layout: {
        op: { kind: "merge", shards: ["shard-6", "shard-7"], node: "node-2", ranges: [[0, 20]], load: 2 },
        pieceNodes: {},
        epochs: {},
        nodes: {},
      },
    };
    expect(layoutLabel(split)).toBe("split shard-3 → shard-3+shard-13 on node-1");
    expect(layoutLabel(merge)).toBe("merge shard-6+shard-7 on node-2");
    expect(layoutLabel({ ...split, target: "node-2" })).toBe(
      "split shard-3 → shard-3+shard-13 on node-1→node-2",
    );
    expect(layoutLabel(record("m3", "shard-1"))).toBeUndefined();
    // a journal record from the store is input: an unreadable layout is no label, not a crash
    for (const op of [
      { kind: "split", pieces: "x" },
      { kind: "split", pieces: [{ id: 7 }] },
      { kind: "merge", shards: [] },
    ])
      expect(layoutLabel({ ...split, layout: { ...split.layout!, op: op as never } })).toBeUndefined();
    const { lastFrame } = render(
      <MigrationsPanel
        migrations={{
          available: true,
          inFlight: [],
          recent: [
            { ...base, id: "m1", shard: "shard-3", label: layoutLabel(split) },
            { ...base, id: "m0", shard: "shard-1", target: "node-2" },
          ],
        }}
        now={now}
        width={100}
        height={4}
        colour={false}
      />,
    );
    expect(plainLines(lastFrame())).toEqual([
      "Migrations: 0 in flight, 2 recent",
      "  split shard-3 → shard-3+shard-13 on node-1 committed · 3s ago",
      "  shard-1 node-1→node-2 committed · 3s ago",
      "",
    ]);
  });

  it("says when there is no journal to read", () => {
    const { lastFrame } = render(
      <MigrationsPanel
        migrations={{ available: false, note: "no journal here", inFlight: [], recent: [] }}
        now={0}
        width={40}
        height={3}
        colour={false}
      />,
    );
    expect(plain(lastFrame())).toContain("no journal here");
  });
});

describe("ForecastPanel", () => {
  it("charts recent access and the forecast with its interval per zone on one scale", () => {
    const f = makeForecast({ kind: "segment", segment: 42 });
    const { lastFrame } = render(
      <ForecastPanel
        targetLabel="segment 42"
        forecast={f}
        loading={false}
        width={50}
        height={14}
        colour={false}
      />,
    );
    const lines = plain(lastFrame()).split("\n");
    expect(lines[0].trimEnd()).toBe("Forecast · segment 42");
    expect(lines[1].trimEnd()).toBe("zone a · ets · now 9.7/s → next 10/s (5.0–15)");
    expect(lines).toHaveLength(14);
    expect(lines.join("\n")).toContain("▓");
    expect(lines.join("\n")).toContain("░");
    expect(lines[13]).toContain("80% interval");
    expect(blank(lines.find((l) => l.startsWith("zone c")))).toBe("zone c · ets · now #/s → next #/s (#–#)");
  });

  it("shows a note instead of a chart when there is no history", () => {
    const { lastFrame } = render(
      <ForecastPanel
        targetLabel="segment 1"
        forecast={{
          target: { kind: "segment", segment: 1 },
          intervalSeconds: 60,
          horizon: 15,
          intervalLevel: 0.8,
          zones: [],
          note: "no access recorded",
        }}
        loading={false}
        width={40}
        height={5}
        colour={false}
      />,
    );
    expect(plain(lastFrame())).toContain("no access recorded");
  });
});

describe("PlanPanel, title, status and help", () => {
  it("prints the plan's lines and the target m would use", () => {
    const { lastFrame } = render(
      <PlanPanel
        shard="shard-3"
        plan={{ shard: "shard-3", mapVersion: 9, lines: ["decision: move → node-2"], target: "node-2" }}
        loading={false}
        width={50}
        height={4}
        colour={false}
      />,
    );
    expect(plainLines(lastFrame())).toEqual([
      "Plan · shard-3 (map v9) · p/esc back",
      "decision: move → node-2",
      "m: migrate shard-3 to node-2",
      "",
    ]);
  });

  it("puts the source, node health and time in the title", () => {
    const snap = makeSnapshot({ unreachable: ["node-3"] });
    const { lastFrame } = render(
      <TitleBar snapshot={snap} view="segments" refreshSeconds={2} width={160} colour={false} />,
    );
    expect(blank(lastFrame())).toBe(
      "shardctl dashboard · segments view · ## segments · # shards · # nodes (# UNREACHABLE) · map v# (embedded) · data: fixture · ##:##:## every #s",
    );
  });

  it("shows the find prompt, the confirmation, or the first warning", () => {
    const find = render(
      <StatusLine input={{ kind: "find", text: "user:4" }} warnings={[]} width={80} colour={false} />,
    );
    expect(plain(find.lastFrame())).toMatch(/^\/ find key: user:4█/);
    const confirm = render(
      <StatusLine
        input={{
          kind: "confirm",
          shard: "shard-1",
          source: "node-1",
          target: "node-2",
          why: "the planner's target",
        }}
        warnings={[]}
        width={100}
        colour={false}
      />,
    );
    expect(plain(confirm.lastFrame())).toContain(
      "Migrate shard-1 from node-1 to node-2? (the planner's target) [y/n]",
    );
    const warn = render(
      <StatusLine
        input={{ kind: "none" }}
        warnings={["node node-2 is UNREACHABLE: refused", "other"]}
        width={80}
        colour={false}
      />,
    );
    expect(plain(warn.lastFrame())).toContain("⚠ node node-2 is UNREACHABLE: refused (+1 more)");
    const help = render(<HelpLine width={140} />);
    expect(plain(help.lastFrame())).toContain("q quit");
  });
});

describe("Frame", () => {
  it("is exactly the size asked for, every line exactly as wide", () => {
    const snap = makeSnapshot({
      segments: 4096,
      shards: 12,
      rates: { 100: [20, 5] },
      unreachable: ["node-2"],
    });
    for (const [w, h] of [
      [100, 30],
      [160, 49],
    ]) {
      const model = frameModel(snap, initialNav, w, h);
      const { lastFrame } = render(
        <Frame
          width={w}
          height={h}
          snapshot={snap}
          model={model}
          view="segments"
          right="forecast"
          forecast={makeForecast(model.focus!)}
          forecastLoading={false}
          planLoading={false}
          input={{ kind: "none" }}
          colour={true}
          hotRate={50}
        />,
      );
      const lines = plain(lastFrame()).split("\n");
      expect(lines).toHaveLength(h);
      // Ink trims trailing blanks; the right edge is held by the right-hand panels
      for (const l of lines) expect(Array.from(l).length).toBeLessThanOrEqual(w);
      expect(Math.max(...lines.map((l) => Array.from(l).length))).toBe(w);
      expect(lines[h - 2]).toContain("UNREACHABLE");
    }
  });

  /** The frame of a terminal too small to draw in. */
  const tooSmall = (width: number, height: number, reservedRows?: number) =>
    plain(
      render(
        <Frame
          width={width}
          height={height}
          reservedRows={reservedRows}
          view="segments"
          right="forecast"
          forecastLoading={false}
          planLoading={false}
          input={{ kind: "none" }}
          colour={false}
          hotRate={50}
        />,
      ).lastFrame(),
    );

  it("asks for a bigger terminal rather than drawing garbage", () => {
    expect(tooSmall(40, 10)).toContain("terminal too small: 40×10, need 60×16");
  });

  it("names the terminal's size when the frame leaves it a row (the interactive dashboard)", () => {
    // a 60×16 terminal gives a 60×15 frame: it said "60×15, need 60×16", and 60×16 did not work
    expect(tooSmall(60, 15, 1)).toContain("terminal too small: 60×16, need 60×17");
  });
});

function record(id: string, shard: string): MigrationRecord {
  return {
    id,
    shard,
    source: "node-1",
    target: "node-1",
    phase: "done",
    startedAt: 0,
  } as MigrationRecord;
}
