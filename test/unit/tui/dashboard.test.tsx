import { render } from "ink-testing-library";
import { afterEach, describe, expect, it } from "vitest";
import { Dashboard, type DashboardProps } from "../../../src/tui/Dashboard.js";
import type { PlanView } from "../../../src/tui/source.js";
import { FixtureSource, makeSnapshot, plain, RecordingMigrator } from "./fixtures.js";

const KEY = {
  down: "\u001B[B",
  up: "\u001B[A",
  right: "\u001B[C",
  enter: "\r",
  escape: "\u001B",
  backspace: "\u007F",
};

let app: ReturnType<typeof render> | undefined;
afterEach(() => {
  app?.unmount();
  app = undefined;
});

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; last frame:\n${plain(app?.lastFrame())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Given a dashboard over a fixture with a hot segment 42 (shard-1) */
async function start(
  source = new FixtureSource(
    makeSnapshot({
      segments: 256,
      shards: 8,
      rates: { 42: [300, 50], 200: [5, 0] },
      unreachable: ["node-3"],
    }),
  ),
  extra: Partial<DashboardProps> = {},
) {
  app = render(
    <Dashboard
      source={source}
      refreshMs={60_000}
      colour={false}
      hotRate={50}
      width={100}
      height={36}
      {...extra}
    />,
  );
  await until("the first snapshot", () => plain(app!.lastFrame()).includes("segments view"));
  return { source, app: app!, frame: () => plain(app!.lastFrame()) };
}

const selectedLine = (frame: string) => frame.split("\n").find((l) => l.startsWith("▶")) ?? "";
const press = async (keys: string) => {
  app!.stdin.write(keys);
  await new Promise((r) => setTimeout(r, 30));
};

describe("Dashboard key bindings", () => {
  it("opens on the hottest row and forecasts its hottest segment", async () => {
    const { source, frame } = await start();
    expect(selectedLine(frame())).toMatch(/^▶\d+-\d+ .* 350\/s ◀/);
    await until("the forecast", () => frame().includes("zone a · ets"));
    expect(source.calls).toContain("forecast 42");
    expect(frame()).toContain("Forecast · segment 42 (shard-2");
  });

  it("moves with j/k and the arrows, pages with l/h, and never leaves the grid", async () => {
    const { frame } = await start();
    // the selected row's label (the rest of its line shows the forecast panel, which may arrive meanwhile)
    const row = () => /^▶\S+/.exec(selectedLine(frame()))?.[0];
    const first = row();
    expect(first).toMatch(/^▶\d+-\d+$/);
    await press("j");
    await until("the selection to move down", () => row() !== first);
    const second = row();
    await press(KEY.up);
    await until("the selection to come back", () => row() === first);
    await press("k");
    await until("another move up", () => row() !== first);
    for (let i = 0; i < 5; i++) await press("h");
    await until("the top row", () => selectedLine(frame()).startsWith("▶0-"));
    await press(KEY.down);
    await until("a move down", () => !selectedLine(frame()).startsWith("▶0-"));
    for (let i = 0; i < 5; i++) await press("l");
    await until("the last row", () => /^▶\d+-255 /.test(selectedLine(frame())));
    expect(second).not.toBe(first);
  });

  it("drills into a shard with enter and comes back with esc", async () => {
    const { frame } = await start();
    await press(KEY.enter);
    await until(
      "the shard view",
      () => frame().includes("shard shard-2 ·") && frame().includes("shard-2 on node-2 (zone b) · epoch 1"),
    );
    // one row per segment of the shard, the hot segment the hottest
    expect(selectedLine(frame())).toMatch(/^▶42(-43)? .*350\/s ◀$/);
    await press(KEY.escape);
    await until("the overview", () => frame().includes("segments view"));
  });

  it("toggles segments and shards with t; a shard row is the sum of its segments", async () => {
    const { frame, source } = await start();
    await press("t");
    await until("the shards view", () => frame().includes("shards view"));
    expect(selectedLine(frame())).toMatch(/^▶shard-2 .* 350\/s ◀/);
    await until("the shard's forecast", () => source.calls.includes("forecast shard-2"));
    await press("t");
    await until("the segments view", () => frame().includes("segments view"));
  });

  it("in the shards view the selection stays on its shard when a merge renumbers the rows", async () => {
    // Given the shards view, refreshed often, with shard-3 selected (one row below the hottest, shard-2)
    const source = new FixtureSource(makeSnapshot({ segments: 256, shards: 8, rates: { 42: [300, 50] } }));
    const { frame } = await start(source, { refreshMs: 50 });
    await press("t");
    await until("the shards view", () => frame().includes("shards view"));
    await press("j");
    await until("shard-3 selected", () => /^▶shard-3 /.test(selectedLine(frame())));
    // When shard-1 and shard-2 merge, so that shard-3 is now the second row and shard-4 the third
    const merged = makeSnapshot({ segments: 256, shards: 8, rates: { 42: [300, 50] } });
    const [a, b, ...rest] = merged.shards;
    merged.shards = [{ ...a, ranges: [[a.ranges[0][0], b.ranges[0][1]]] }, ...rest];
    merged.mapVersion = 8;
    const before = source.snapshots;
    source.snap = merged;
    await until("a refresh with the merged map", () => source.snapshots > before + 1);
    await until("the merged frame", () => frame().includes("map v8"));
    // Then shard-3 is still the selected one, and m would act on it
    expect(selectedLine(frame())).toMatch(/^▶shard-3 /);
    await press("j");
    await until("shard-4 selected", () => /^▶shard-4 /.test(selectedLine(frame())));
  });

  it("shows the plan with p and goes back with p", async () => {
    const { frame, source } = await start();
    await press("p");
    await until("the plan", () => frame().includes("Plan · shard-2 (map v7)"));
    expect(frame()).toContain("decision: move → node-3");
    expect(source.calls).toContain("plan shard-2");
    await press("p");
    await until("the forecast panel", () => frame().includes("Forecast ·"));
  });

  it("m asks to move the shard to the plan's target; n cancels and nothing is called", async () => {
    const migrator = new RecordingMigrator();
    const { frame, source } = await start(undefined, { onMigrate: migrator.onMigrate });
    // When m is pressed on the hot row (shard-2, on node-2)
    await press("m");
    // Then the planner is asked and its target proposed
    await until("the confirmation", () =>
      frame().includes("Migrate shard-2 from node-2 to node-3? (the planner's target, map v7) [y/n]"),
    );
    expect(source.calls).toContain("plan shard-2");
    // keys other than y/n do nothing while asking
    await press("q");
    await press("j");
    expect(frame()).toContain("[y/n]");
    await press("n");
    await until("the cancellation", () => frame().includes("not migrating shard-2"));
    expect(migrator.calls).toEqual([]);
  });

  it("y runs the migration through the callback with shard and target, showing progress and the result", async () => {
    const migrator = new RecordingMigrator();
    const { frame } = await start(undefined, { onMigrate: migrator.onMigrate });
    await press("m");
    await until("the confirmation", () => frame().includes("[y/n]"));
    await press("y");
    await until("the migration to start", () => frame().includes("migrating shard-2 → node-3…"));
    // the plan's map version goes along: the coordinator refuses the move if the map moved on since
    expect(migrator.calls).toEqual(["shard-2 node-3 v7"]);
    // progress goes to the status line
    migrator.progress("copying", 3 * 1024 * 1024, 120, 8 * 1024 * 1024);
    await until("the progress", () =>
      frame().includes("migrating shard-2 → node-3: copying, 3.0M/8.0M copied, lag 120 entries"),
    );
    // one migration at a time
    await press("m");
    await until("the refusal", () =>
      frame().includes("a migration is running (shard-2 → node-3); one at a time"),
    );
    expect(migrator.calls).toHaveLength(1);
    // q asks once while it runs
    await press("q");
    await until("the warning", () => frame().includes("shard-2 is still migrating; q again quits anyway"));
    // the result
    migrator.finish({ ok: true, message: "shard-2 moved to node-3: write pause 12 ms, took 840 ms" });
    await until("the result", () => frame().includes("shard-2 moved to node-3: write pause 12 ms"));
    // and another one may start
    await press("m");
    await until("a new confirmation", () => frame().includes("[y/n]"));
  });

  it("m pressed twice while the planner thinks asks once and migrates once", async () => {
    // Given a planner that answers only when the test lets it (a slow plan: agent round trips per segment)
    class SlowPlanner extends FixtureSource {
      waiting: (() => void)[] = [];
      override async plan(shard: string): Promise<PlanView> {
        await new Promise<void>((r) => this.waiting.push(r));
        return super.plan(shard);
      }
    }
    const source = new SlowPlanner(
      makeSnapshot({ segments: 256, shards: 8, rates: { 42: [300, 50], 200: [5, 0] } }),
    );
    const migrator = new RecordingMigrator();
    const { frame } = await start(source, { onMigrate: migrator.onMigrate });
    // When m is pressed twice before the planner answers, the first answer is confirmed with y
    await press("m");
    await press("m");
    await until("the planner to be asked", () => source.waiting.length > 0);
    await until("the second m to be refused", () =>
      frame().includes("still asking the planner where shard-2 should go"),
    );
    source.waiting.shift()!();
    await until("the confirmation", () => frame().includes("[y/n]"));
    await press("y");
    await until("the migration to start", () => frame().includes("migrating shard-2 → node-3…"));
    // and whatever else the planner was asked answers afterwards
    while (source.waiting.length) source.waiting.shift()!();
    await new Promise((r) => setTimeout(r, 100));
    // Then there is no second question, and y again starts nothing
    expect(frame()).not.toContain("[y/n]");
    await press("y");
    expect(migrator.calls).toEqual(["shard-2 node-3 v7"]);
    migrator.finish({ ok: true, message: "shard-2 moved to node-3: write pause 12 ms, took 840 ms" });
    await until("the result", () => frame().includes("shard-2 moved to node-3"));
  });

  it("shows the callback's error and the failed result on the status line", async () => {
    const migrator = new RecordingMigrator();
    const { frame } = await start(undefined, { onMigrate: migrator.onMigrate });
    await press("m");
    await until("the confirmation", () => frame().includes("[y/n]"));
    await press("Y");
    await until("the start", () => migrator.calls.length === 1);
    migrator.fail("migration m1 of shard-2 to node-3 aborted: target node-3 (prepare) answered 409");
    await until("the error", () =>
      frame().includes(
        "migration of shard-2 to node-3 failed: migration m1 of shard-2 to node-3 aborted: target node-3",
      ),
    );
    // a result that says it did not work is shown as such
    await press("m");
    await until("the confirmation", () => frame().includes("[y/n]"));
    await press("y");
    await until("the second start", () => migrator.calls.length === 2);
    migrator.finish({ ok: false, message: "shard-2 → node-3 ended committed: roll-forward pending" });
    await until("the failed result", () => frame().includes("ended committed: roll-forward pending"));
  });

  it("m explains why it cannot migrate: no target from the planner, no coordinator", async () => {
    // Given a planner that proposes no move
    const migrator = new RecordingMigrator();
    const src = new FixtureSource(makeSnapshot({ segments: 256, shards: 8, rates: { 42: [300, 50] } }));
    src.planTarget = undefined;
    const { frame } = await start(src, { onMigrate: migrator.onMigrate });
    await press("m");
    await until("the explanation", () =>
      frame().includes("the planner proposes no move for shard-2 (zone c rising): nothing to migrate"),
    );
    expect(frame()).not.toContain("[y/n]");
    expect(migrator.calls).toEqual([]);
    app!.unmount();
    // Given a dashboard without a coordinator (no agent token)
    const second = await start(undefined, { migrateUnavailable: "no agent token is configured" });
    await press("m");
    await until("the explanation", () =>
      second.frame().includes("cannot migrate from here: no agent token is configured; nothing was changed"),
    );
    expect(second.source.calls.some((c) => c.startsWith("plan"))).toBe(false);
  });

  it("finds a key with / and jumps to its segment", async () => {
    const { frame, source } = await start();
    await press("j");
    await press("/");
    await until("the prompt", () => frame().includes("/ find key: █"));
    await press("hox");
    await press(KEY.backspace);
    await press("t");
    await until("the typed key", () => frame().includes("/ find key: hot█"));
    await press(KEY.enter);
    await until("the jump", () => frame().includes('key "hot" → segment 42 in shard-2 on node-2'));
    expect(frame()).toContain("Forecast · segment 42 (shard-2");
    expect(selectedLine(frame())).toMatch(/◀$/);
    await until("its forecast", () => source.calls.filter((c) => c === "forecast 42").length >= 1);
  });

  it("reports a malformed key, ignores control characters, and esc cancels the search", async () => {
    const { frame } = await start();
    await press("/");
    await press("\u0007\u0001");
    await press(KEY.enter);
    await until("the error", () => frame().includes('cannot find "": a key must be 1 to 1024 bytes'));
    await press("/");
    await press("abc");
    await press(KEY.escape);
    await until("the prompt to close", () => !frame().includes("/ find key: "));
    await press("q");
  });

  it("says clearly that a node is unreachable and keeps drawing the rest", async () => {
    const { frame } = await start();
    expect(frame()).toContain("3 nodes (1 UNREACHABLE)");
    expect(frame()).toMatch(/node-3 +c +UNREACHABLE/);
    expect(frame()).toContain("⚠ node node-3 is UNREACHABLE: connect ECONNREFUSED");
  });

  it("quits with q: nothing reacts afterwards", async () => {
    const { frame, source } = await start();
    await press("q");
    const after = frame();
    await press("t");
    await new Promise((r) => setTimeout(r, 100));
    expect(frame()).toBe(after);
    expect(source.snapshots).toBe(1);
  });

  it("says what went wrong when the cluster cannot be read at all", async () => {
    const source = new FixtureSource(makeSnapshot());
    source.snapshot = async () => {
      throw new Error("the embedded store holds no layout yet");
    };
    app = render(
      <Dashboard source={source} refreshMs={60_000} colour={false} hotRate={50} width={100} height={30} />,
    );
    await until("the error", () =>
      plain(app!.lastFrame()).includes("cannot read the cluster: the embedded store holds no layout yet"),
    );
  });
});
