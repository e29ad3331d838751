/**
 * End to end: a real local cluster (`shardctl up --local`, 3 agents in zones
 * a, b, c), a workload with one hot key driven through the project's routing
 * client, and `shardctl dashboard` running in a real terminal (tmux, 160×50,
 * private socket). Checks that the hot segment is the hottest cell, that
 * enter drills into its shard, that q quits with exit 0 and the terminal
 * back in cooked mode (icanon, echo), that the nodes panel switches to the
 * round trips the agents measure, that the dashboard's migration callback
 * moves a shard with the real coordinator and the migrations panel shows
 * it, and that a killed agent is reported UNREACHABLE without breaking the
 * dashboard.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../../../src/cli.js";
import { dashboardMigrator } from "../../../src/commands/dashboard-migrate.js";
import { loadConfig } from "../../../src/config.js";
import { ShardClient } from "../../../src/client/shard-client.js";
import { RoutingTable } from "../../../src/engine/location-map.js";
import { Segmenter } from "../../../src/engine/segmenter.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { RAMP_256, stripAnsi } from "../../../src/tui/ansi.js";
import { LiveSource } from "../../../src/tui/live-source.js";
import { repoRoot } from "../../helpers/cli.js";
import { freePortRange } from "../agent/harness.js";

const SOCKET = `shardctl-e2e-${process.pid}-${Date.now()}`;
const SESSION = "dash";
const HOT_KEY = "user:hot";
const SEGMENTS = 4096;

let dir: string;
let dataDir: string;
const env: NodeJS.ProcessEnv = {
  ...process.env,
  SHARDCTL_SEGMENTS: String(SEGMENTS),
  SHARDCTL_ZONES: "a,b,c",
};
delete env.SHARDCTL_TOKEN;
delete env.SHARDCTL_DATA_DIR;
delete env.SHARDCTL_STORE;
delete env.SHARDCTL_CONFIG;
let stopWorkload = false;
let workload: Promise<number> | undefined;

function collect() {
  const chunks: string[] = [];
  return {
    stream: new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) }),
    text: () => chunks.join(""),
  };
}

async function cli(...args: string[]) {
  const out = collect();
  const err = collect();
  const code = await runCli(["--data-dir", dataDir, ...args], { out: out.stream, err: err.stream }, env);
  return { code, out: out.text(), err: err.text() };
}

function tmux(...args: string[]): string {
  return execFileSync("tmux", ["-L", SOCKET, ...args], { encoding: "utf8" });
}

function capture(colours = false, session = SESSION): string {
  return tmux("capture-pane", "-p", ...(colours ? ["-e"] : []), "-t", session);
}

async function waitForPane(
  what: string,
  cond: (pane: string) => boolean,
  timeoutMs = 90_000,
  session = SESSION,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let pane = "";
  for (;;) {
    try {
      pane = capture(false, session);
    } catch {
      pane = "";
    }
    if (cond(pane)) return pane;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; the pane shows:\n${pane}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Starts `shardctl dashboard --refresh 1` in a new 160×50 tmux session; when it exits, its exit
 * status goes to `rcFile`, the terminal's `stty -a` to `sttyFile`, and DASHBOARD-EXITED to the pane.
 */
function startDashboard(session: string, tag: string): { rcFile: string; sttyFile: string } {
  const { command, args } = shardctlCommand();
  const rcFile = join(dir, `rc${tag}.txt`);
  const sttyFile = join(dir, `stty${tag}.txt`);
  const envs = `SHARDCTL_SEGMENTS=${SEGMENTS} SHARDCTL_ZONES=a,b,c TERM=tmux-256color`;
  const dash = [command, ...args, "--data-dir", dataDir, "dashboard", "--refresh", "1"].map(quote).join(" ");
  const script = `cd ${quote(repoRoot)} && env ${envs} ${dash}; echo $? > ${quote(rcFile)}; stty -a > ${quote(sttyFile)}; echo DASHBOARD-EXITED; sleep 600`;
  tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "50", `bash -c ${quote(script)}`);
  return { rcFile, sttyFile };
}

/** The TypeScript source through tsx, as the brief asks (a stale dist/ build must not be what is tested). */
function shardctlCommand(): { command: string; args: string[] } {
  return { command: process.execPath, args: ["--import", "tsx", join(repoRoot, "bin/shardctl.ts")] };
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Hot: 20 writes per round from zone b; cold: one read per round from zone a, on ever new keys. */
async function runWorkload(): Promise<number> {
  const token = readFileSync(join(dataDir, "local/token"), "utf8").trim();
  const hot = new ShardClient({ store: new EmbeddedStore(dataDir), token, originZone: "b" });
  const cold = new ShardClient({ store: new EmbeddedStore(dataDir), token, originZone: "a" });
  let n = 0;
  while (!stopWorkload) {
    await Promise.all(Array.from({ length: 20 }, (_, i) => hot.put(HOT_KEY, `v${n + i}`)));
    await cold.get(`cold:${n % 500}`);
    n += 20;
    await new Promise((r) => setTimeout(r, 20));
  }
  return n;
}

/** The highest ramp level of any cell colour on a heatmap line (-1: none). */
function rampLevel(line: string): number {
  let best = -1;
  // eslint-disable-next-line no-control-regex -- matching the escapes tmux captured is the point
  for (const m of line.matchAll(/\x1b\[[0-9;]*?(?:38|48);5;(\d+)[0-9;]*m/g)) {
    const level = RAMP_256.indexOf(Number(m[1]));
    if (level > best) best = level;
  }
  return best;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-dash-e2e-"));
  dataDir = join(dir, "data");
  const base = await freePortRange(3);
  const up = await cli("up", "--local", "--nodes", "3", "--zones", "a,b,c", "--base-port", String(base));
  expect(up.code, up.err).toBe(0);
  workload = runWorkload();
}, 180_000);

afterAll(async () => {
  stopWorkload = true;
  await workload?.catch(() => 0);
  spawnSync("tmux", ["-L", SOCKET, "kill-server"]);
  // tmux leaves its socket file behind
  rmSync(join(process.env.TMUX_TMPDIR ?? "/tmp", `tmux-${process.getuid?.() ?? 0}`, SOCKET), { force: true });
  await cli("down", "--timeout", "5");
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe("shardctl dashboard in a terminal", () => {
  it("shows the hot segment as the hottest cell, drills into it, quits and restores the terminal", async () => {
    const hotSegment = new Segmenter(SEGMENTS).segmentOf(HOT_KEY);
    const vm = await new EmbeddedStore(dataDir).load();
    const hotShard = new RoutingTable(vm!).shardOf(hotSegment);
    // Given the dashboard running in a 160×50 terminal
    const { rcFile, sttyFile } = startDashboard(SESSION, "");
    await waitForPane(
      "the dashboard with live data",
      (p) => p.includes("segments view") && p.includes("data: agents") && p.includes("◀"),
    );
    // let a few live columns accumulate
    await new Promise((r) => setTimeout(r, 3000));

    // Then the hottest row (◀) is the band holding the hot segment, and its cells are the hottest colour
    // (a whole frame: on a loaded machine one capture once caught a frame being redrawn, 8 rows of it)
    const isHeat = (l: string) => /^[ ▶]\d+-\d+ /.test(stripAnsi(l));
    await waitForPane("a whole frame of the heat map", (p) => p.split("\n").filter(isHeat).length > 20);
    let pane = capture(true);
    for (let i = 0; i < 20 && pane.split("\n").filter(isHeat).length <= 20; i++) {
      await new Promise((r) => setTimeout(r, 100));
      pane = capture(true);
    }
    const heatLines = pane.split("\n").filter(isHeat);
    expect(heatLines.length).toBeGreaterThan(20);
    const hottest = heatLines.filter((l) => stripAnsi(l).includes("◀"));
    expect(hottest).toHaveLength(1);
    const [, from, to] = /^[ ▶](\d+)-(\d+) /.exec(stripAnsi(hottest[0]))!;
    expect(hotSegment).toBeGreaterThanOrEqual(Number(from));
    expect(hotSegment).toBeLessThanOrEqual(Number(to));
    const levels = heatLines.map(rampLevel);
    const hotLevel = rampLevel(hottest[0]);
    expect(hotLevel).toBe(RAMP_256.length - 1);
    expect(levels.filter((l) => l === hotLevel)).toHaveLength(1);
    // the selection opens on it and the forecast panel follows it
    expect(stripAnsi(hottest[0]).startsWith("▶")).toBe(true);
    expect(stripAnsi(pane)).toMatch(
      new RegExp(`Forecast · segment ${hotSegment} \\(${hotShard.id} on ${hotShard.node}\\)`),
    );
    expect(stripAnsi(pane)).toMatch(/node-2 +b +ok/);
    // the dashboard asked the agents to measure their round trips; the nodes panel shows them
    await waitForPane("measured round trips", (p) => /Nodes \(rtt ms: measured [^)]*; \* model\)/.test(p));

    // When enter is pressed, the dashboard drills into the hot segment's shard
    tmux("send-keys", "-t", SESSION, "Enter");
    const drilled = await waitForPane("the shard view", (p) => p.includes(`shard ${hotShard.id} ·`));
    expect(drilled).toContain(`${hotShard.id} on ${hotShard.node} (zone`);
    const drilledHot = drilled.split("\n").find((l) => l.includes("◀")) ?? "";
    const m = /^[ ▶](\d+)(?:-(\d+))? /.exec(drilledHot);
    expect(m, drilledHot).not.toBeNull();
    expect(hotSegment).toBeGreaterThanOrEqual(Number(m![1]));
    expect(hotSegment).toBeLessThanOrEqual(Number(m![2] ?? m![1]));
    // and esc goes back, t shows shards
    tmux("send-keys", "-t", SESSION, "Escape");
    await waitForPane("the overview", (p) => p.includes("segments view"));
    tmux("send-keys", "-t", SESSION, "t");
    const shards = await waitForPane("the shards view", (p) => p.includes("shards view"));
    expect(shards.split("\n").find((l) => l.includes("◀"))).toMatch(new RegExp(`^▶${hotShard.id} `));

    // When q is pressed, the dashboard exits 0 and the terminal is back in cooked mode
    tmux("send-keys", "-t", SESSION, "q");
    const after = await waitForPane("the exit", (p) => p.includes("DASHBOARD-EXITED"), 30_000);
    expect(after).not.toContain("segments view"); // the alternate screen is gone
    expect(readFileSync(rcFile, "utf8").trim()).toBe("0");
    const stty = readFileSync(sttyFile, "utf8");
    expect(stty).toMatch(/(^|\s)icanon(\s|$)/);
    expect(stty).toMatch(/(^|\s)echo(\s|$)/);
    expect(stty).not.toMatch(/-icanon|(^|\s)-echo(\s|$)/);
  }, 240_000);

  it("SIGTERM from outside: the terminal is given back (main screen, cooked mode) and the exit is 143", async () => {
    // Given the dashboard running in a terminal
    const { rcFile, sttyFile } = startDashboard("term", "-term");
    await waitForPane("the dashboard", (p) => p.includes("segments view"), 90_000, "term");
    expect(tmux("display", "-p", "-t", "term", "#{alternate_on}").trim()).toBe("1");
    // When it is sent SIGTERM (the shell's child: the dashboard's node process)
    const shell = tmux("display", "-p", "-t", "term", "#{pane_pid}").trim();
    const pid = Number(execFileSync("pgrep", ["-P", shell], { encoding: "utf8" }).trim().split("\n")[0]);
    process.kill(pid, "SIGTERM");
    const after = await waitForPane("the exit", (p) => p.includes("DASHBOARD-EXITED"), 30_000, "term");
    // Then the main screen is back, the terminal in cooked mode, and the exit says SIGTERM
    expect(tmux("display", "-p", "-t", "term", "#{alternate_on}").trim()).toBe("0");
    expect(after).not.toContain("segments view");
    expect(readFileSync(rcFile, "utf8").trim()).toBe("143");
    const stty = readFileSync(sttyFile, "utf8");
    expect(stty).toMatch(/(^|\s)icanon(\s|$)/);
    expect(stty).not.toMatch(/-icanon|(^|\s)-echo(\s|$)/);
    tmux("kill-session", "-t", "term");
  }, 180_000);

  it("spaces the live columns as far apart as the snapshots were taken, not the refresh interval", async () => {
    // Given a live source refreshing every second whose snapshots are taken 3 s apart (as when an
    // agent that does not answer is waited for)
    const { config } = loadConfig({ env: { ...env, SHARDCTL_DATA_DIR: dataDir } });
    let t = Date.now();
    const live = new LiveSource({
      config,
      store: new EmbeddedStore(dataDir),
      refreshSeconds: 1,
      probeEverySeconds: 0,
      now: () => t,
    });
    try {
      const first = await live.snapshot();
      expect(first.heat.origin).toBe("agents");
      expect(first.heat.intervalSeconds).toBe(1);
      let last = first;
      for (let i = 0; i < 3; i++) {
        t += 3000;
        last = await live.snapshot();
      }
      // Then the heat history says its columns are 3 s apart
      expect(last.heat.reads).toHaveLength(4);
      expect(last.heat.intervalSeconds).toBeCloseTo(3, 5);
    } finally {
      await live.close();
    }
  }, 60_000);

  it("a token every agent refuses is said to be the token, not agents that are down", async () => {
    const { config } = loadConfig({
      env: { ...env, SHARDCTL_DATA_DIR: dataDir, SHARDCTL_TOKEN: "not-the-agents-token" },
    });
    const live = new LiveSource({
      config,
      store: new EmbeddedStore(dataDir),
      refreshSeconds: 1,
      probeEverySeconds: 0,
    });
    try {
      const snap = await live.snapshot();
      expect(snap.warnings.join("\n")).toMatch(/every agent refused our token \(401\).*is the token right\?/);
      expect(snap.warnings.join("\n")).not.toMatch(/is the cluster up/);
    } finally {
      await live.close();
    }
  }, 60_000);

  it("m's callback moves a shard with the real coordinator, and the migrations panel shows it", async () => {
    // Given the dashboard's migration callback, built as the command builds it
    const { config } = loadConfig({ env: { ...env, SHARDCTL_DATA_DIR: dataDir } });
    const store = new EmbeddedStore(dataDir);
    const migrator = dashboardMigrator(config, store);
    expect(migrator.unavailable).toBeUndefined();
    const before = (await store.load())!;
    const shard = before.map.shards.find((s) => s.node === "node-1")!;
    // When the operator confirms a move of a node-1 shard to node-2, planned against the current map
    const progress: string[] = [];
    const log: string[] = [];
    const r = await migrator.onMigrate!(
      shard.id,
      "node-2",
      { progress: (p) => progress.push(p.phase), log: (l) => log.push(l) },
      { mapVersion: before.version },
    );
    // Then the shard moved at epoch + 1, and the result says so
    expect(r.ok, `${r.message}\n${log.join("\n")}`).toBe(true);
    expect(r.message).toMatch(new RegExp(`^${shard.id} moved to node-2: write pause \\d+ ms`));
    const after = (await store.load())!.map.shards.find((s) => s.id === shard.id)!;
    expect(after.node).toBe("node-2");
    expect(after.epoch).toBe(shard.epoch + 1);
    expect(log.length).toBeGreaterThan(0);
    // and the live source reads it from the journal as a recent, committed move with its write pause
    const live = new LiveSource({ config, store, refreshSeconds: 1, probeEverySeconds: 0 });
    try {
      const snap = await live.snapshot();
      const rec = snap.migrations.recent.find((m) => m.shard === shard.id)!;
      expect(rec).toMatchObject({ source: "node-1", target: "node-2", result: "committed" });
      expect(rec.writePauseMs).toBeGreaterThanOrEqual(0);
      expect(snap.migrations.inFlight).toEqual([]);
    } finally {
      await live.close();
    }
    // a move proposed by a plan of the old map is refused (re-plan), and one to where the shard is already
    const quiet = { progress: () => {}, log: () => {} };
    const other = before.map.shards.find((s) => s.node === "node-1" && s.id !== shard.id)!;
    await expect(
      migrator.onMigrate!(other.id, "node-3", quiet, { mapVersion: before.version }),
    ).rejects.toThrow(/computed against location map version \d+, but the map is now at version/);
    await expect(migrator.onMigrate!(shard.id, "node-2", quiet)).rejects.toThrow(/already/);
    expect((await store.load())!.map.shards.find((s) => s.id === other.id)!.node).toBe("node-1");
  }, 180_000);

  it("reports a killed agent as UNREACHABLE and keeps showing the others", async () => {
    // Given node-3's agent is killed
    const pidFile = join(dataDir, "local/node-3/agent.pid");
    expect(existsSync(pidFile)).toBe(true);
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    process.kill(pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 300));
    // When the dashboard prints one frame
    const { command, args } = shardctlCommand();
    const r = spawnSync(
      command,
      [
        ...args,
        "--data-dir",
        dataDir,
        "dashboard",
        "--once",
        "--width",
        "160",
        "--height",
        "50",
        "--color",
        "never",
      ],
      {
        cwd: repoRoot,
        env: { ...env },
        encoding: "utf8",
        timeout: 120_000,
      },
    );
    // Then it exits 0 and says so, with the other nodes still ok
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("3 nodes (1 UNREACHABLE)");
    expect(r.stdout).toMatch(/node-3 +c +UNREACHABLE/);
    expect(r.stdout).toMatch(/node-1 +a +ok/);
    expect(r.stdout).toMatch(/⚠ node node-3 \(127\.0\.0\.1:\d+\) is UNREACHABLE/);
    expect(r.stdout).toContain("data: agents");
    // the round trips the agents measured earlier are still shown, and the move of the test before
    expect(r.stdout).toMatch(/Nodes \(rtt ms: measured/);
    expect(r.stdout).toMatch(/Migrations: 0 in flight, 1 recent/);
    expect(r.stdout).toMatch(/node-1→node-2 committed pause \d+ms/);
    writeFileSync(join(dir, "once.txt"), r.stdout);
  }, 180_000);
});
