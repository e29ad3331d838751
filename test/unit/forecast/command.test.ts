import { existsSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { runCli } from "../../../src/cli.js";
import { defaultHorizon, runForecastBacktest } from "../../../src/commands/forecast.js";
import type { IO } from "../../../src/output.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const seriesDir = resolve(repoRoot, "../shared/data/series");
// these tests read a real public series beside the repository: say so plainly when it is not there
if (!existsSync(join(seriesDir, "azure_llm_conv_requests_10s.csv")))
  throw new Error(
    `${seriesDir}/azure_llm_conv_requests_10s.csv is missing: check out ../shared beside the repository`,
  );

function fakeIO(): IO & { stdout: () => string; stderr: () => string } {
  const out: string[] = [];
  const err: string[] = [];
  const sink = (into: string[]) =>
    new Writable({
      write(chunk, _enc, cb) {
        into.push(chunk.toString());
        cb();
      },
    });
  return { out: sink(out), err: sink(err), stdout: () => out.join(""), stderr: () => err.join("") };
}

const tmp = tempDirs("shardctl-forecast-");

/** A CSV file in a directory removed after the test. */
function tempCsv(content: string): string {
  const dir = tmp();
  const path = join(dir, "series.csv");
  writeFileSync(path, content);
  return path;
}

describe("shardctl forecast backtest", () => {
  it("backtests a real series end to end and prints one JSON object", async () => {
    // Given a real public series (10-second LLM request counts, 349 points)
    const io = fakeIO();
    const input = join(seriesDir, "azure_llm_conv_requests_10s.csv");
    // When the command runs with --json
    const code = await runCli(["forecast", "backtest", "--input", input, "--json"], io);
    // Then it exits 0 and stdout is exactly one JSON object of the documented shape
    expect(code).toBe(0);
    const report = JSON.parse(io.stdout());
    expect(report).toMatchObject({ points: 349, interval_seconds: 10 });
    expect(Number.isInteger(report.season) && report.season >= 1).toBe(true);
    expect(report.horizon).toBeGreaterThanOrEqual(1);
    const names = report.models.map((m: { name: string }) => m.name);
    expect(names).toContain("seasonal_naive");
    for (const m of report.models) {
      expect(Object.keys(m).sort()).toEqual(["mase", "name", "smape"]);
      expect(Number.isFinite(m.mase) && Number.isFinite(m.smape)).toBe(true);
    }
    expect(typeof report.selected).toBe("string");
    expect(Number.isFinite(report.selected_mase)).toBe(true);
    expect(Array.isArray(report.notes)).toBe(true);
  });

  it("prints a table and the selected model without --json", async () => {
    const io = fakeIO();
    const input = join(seriesDir, "azure_llm_conv_requests_10s.csv");
    const code = await runCli(["forecast", "backtest", "-i", input, "--horizon", "40", "--season", "1"], io);
    expect(code).toBe(0);
    expect(io.stdout()).toMatch(/seasonal_naive/);
    expect(io.stdout()).toMatch(/selected model for this series: \w+/);
    expect(io.stderr()).toMatch(/horizon 40/);
  });

  it("exits 2 with the line number for a non-numeric value", async () => {
    const io = fakeIO();
    const rows = Array.from({ length: 40 }, (_, i) => `${1700000000 + 60 * i},${i === 7 ? "oops" : i}`);
    const code = await runCli(["forecast", "backtest", "-i", tempCsv("t,v\n" + rows.join("\n"))], io);
    expect(code).toBe(2);
    expect(io.stderr()).toMatch(/line 9: the value "oops" is not a number/);
  });

  it("exits 2 for a missing file, a bad --horizon and too few points", async () => {
    let io = fakeIO();
    expect(await runCli(["forecast", "backtest", "-i", "/nonexistent/x.csv"], io)).toBe(2);
    expect(io.stderr()).toMatch(/cannot read the input \/nonexistent\/x.csv: it does not exist/);
    io = fakeIO();
    const ok = join(seriesDir, "azure_llm_conv_requests_10s.csv");
    expect(await runCli(["forecast", "backtest", "-i", ok, "--horizon", "0"], io)).toBe(2);
    expect(io.stderr()).toMatch(/--horizon must be a whole number/);
    // beyond what a double holds exactly: refused, not read as 100000000000000000000
    io = fakeIO();
    expect(await runCli(["forecast", "backtest", "-i", ok, "--horizon", "99999999999999999999"], io)).toBe(2);
    expect(io.stderr()).toMatch(
      /--horizon must be a whole number of points, at least 1 and at most 9007199254740991/,
    );
    io = fakeIO();
    expect(await runCli(["forecast", "backtest", "-i", tempCsv("t,v\n1,1\n2,2\n")], io)).toBe(2);
    expect(io.stderr()).toMatch(/too few points/);
    io = fakeIO();
    expect(await runCli(["forecast", "backtest"], io)).toBe(2);
  });

  it("says how many points a backtest needs, and takes exactly that many", async () => {
    const rows = (n: number) =>
      "timestamp,value\n" +
      Array.from({ length: n }, (_, i) => `${1700000000 + 300 * i},${i % 5}`).join("\n");
    // no season: 16 to train on and one to score (the hint used to say 32, and 17 worked)
    let io = fakeIO();
    expect(await runCli(["forecast", "backtest", "-i", tempCsv(rows(16)), "--season", "1"], io)).toBe(2);
    expect(io.stderr()).toContain("too few points for a backtest: 16; with no season it needs at least 17");
    io = fakeIO();
    expect(
      await runCli(["forecast", "backtest", "-i", tempCsv(rows(17)), "--season", "1", "--json"], io),
    ).toBe(0);
    // a season of 50: more than two seasons (100 points were refused as below "twice the season")
    io = fakeIO();
    expect(await runCli(["forecast", "backtest", "-i", tempCsv(rows(100)), "--season", "50"], io)).toBe(2);
    expect(io.stderr()).toContain(
      "too few points for a backtest: 100; with a season of 50 it needs at least 101",
    );
    expect(io.stderr()).toMatch(/hint: .*give more data, or a shorter --season/);
    io = fakeIO();
    expect(
      await runCli(["forecast", "backtest", "-i", tempCsv(rows(101)), "--season", "50", "--json"], io),
    ).toBe(0);
  });

  it("handles an all-zero series: works, says so, no NaN", () => {
    const rows = Array.from({ length: 100 }, (_, i) => `${1700000000 + 3600 * i},0`);
    const io = fakeIO();
    const report = runForecastBacktest(
      { input: "zeros.csv" },
      { io, readFile: () => "t,v\n" + rows.join("\n") },
    );
    expect(report.notes.join(" ")).toMatch(/every value is zero/);
    expect(report.models.length).toBeGreaterThan(1);
    for (const m of report.models) expect(m.mase).toBe(0);
    expect(report.selected_mase).toBe(0);
  });

  it("reports gap filling in the notes", () => {
    const rows = Array.from({ length: 100 }, (_, i) => `${1700000000 + 3600 * i},${i % 24}`).filter(
      (_, i) => i !== 50,
    );
    const io = fakeIO();
    const report = runForecastBacktest(
      { input: "gaps.csv", json: true },
      { io, readFile: () => "t,v\n" + rows.join("\n") },
    );
    expect(report.points).toBe(100);
    expect(report.notes.join(" ")).toMatch(/1 missing point filled/);
  });

  it("has detailed help with examples", async () => {
    const io = fakeIO();
    expect(await runCli(["forecast", "backtest", "--help"], io)).toBe(0);
    expect(io.stdout()).toMatch(/Examples:/);
    expect(io.stdout()).toMatch(/--json/);
  });

  it("defaults the horizon to one day in the series' interval, capped", () => {
    expect(defaultHorizon(3600)).toBe(24);
    expect(defaultHorizon(300)).toBe(288);
    expect(defaultHorizon(10)).toBe(288);
    expect(defaultHorizon(86400)).toBe(1);
    expect(defaultHorizon(7 * 86400)).toBe(1);
  });
});
