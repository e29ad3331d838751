/**
 * The interactive container over the real LiveSource and the real embedded
 * store: what the operator sees when the store stops answering mid-session.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { render } from "ink-testing-library";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { Dashboard } from "../../../src/tui/Dashboard.js";
import { LiveSource } from "../../../src/tui/live-source.js";
import { cli } from "../../helpers/cli.js";
import { plain } from "../../unit/tui/fixtures.js";

let dir: string;
let env: NodeJS.ProcessEnv;
let app: ReturnType<typeof render> | undefined;
let live: LiveSource | undefined;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-tui-live-"));
  env = {
    SHARDCTL_DATA_DIR: join(dir, "data"),
    SHARDCTL_CONFIG: join(dir, "shardctl.yaml"),
    SHARDCTL_TOKEN: "t0ken",
  };
  writeFileSync(join(dir, "shardctl.yaml"), "segments: 1024\n");
});
afterEach(async () => {
  app?.unmount();
  app = undefined;
  await live?.close();
  live = undefined;
  rmSync(dir, { recursive: true, force: true });
});

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; last frame:\n${plain(app?.lastFrame())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("Dashboard over LiveSource and the embedded store", () => {
  it("says that it cannot refresh when the store breaks mid-session, instead of showing old data as current", async () => {
    // Given a running dashboard over an embedded layout
    expect((await cli(["init"], env)).code).toBe(0);
    const { config } = loadConfig({ file: env.SHARDCTL_CONFIG, env });
    const store = new EmbeddedStore(config.dataDir);
    live = new LiveSource({ config, store, refreshSeconds: 0.2, agentTimeoutMs: 500 });
    app = render(
      <Dashboard source={live} refreshMs={200} colour={false} hotRate={50} width={120} height={36} />,
    );
    const frame = () => plain(app!.lastFrame());
    await until("the first snapshot", () => frame().includes("map v1 (embedded)"));
    // When the location map file is overwritten with garbage
    const file = join(config.dataDir, "location-map.json");
    const good = readFileSync(file);
    writeFileSync(file, "{ not json");
    // Then the status line says the frame is no longer being refreshed, and why
    await until("the refresh failure on the status line", () => frame().includes("cannot refresh"));
    const status = frame()
      .split("\n")
      .find((l) => l.includes("cannot refresh"))!;
    expect(status).toMatch(/cannot refresh \(showing \d\d:\d\d:\d\d\): the location map .* is corrupt/);
    // and once the store answers again, the warning goes away
    writeFileSync(file, good);
    await until("the warning to clear", () => !frame().includes("cannot refresh"));
    expect(frame()).toContain("map v1 (embedded)");
  });
});
