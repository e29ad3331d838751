/**
 * The package's module API (package.json "exports" → src/index.ts): what the
 * README and the docs tell an application to import from "shardctl" is there.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import * as api from "../../src/index.js";
import { repoRoot } from "../helpers/cli.js";

describe('import … from "shardctl"', () => {
  it("is src/index.ts, built", () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
      exports: Record<string, string>;
      types: string;
    };
    expect(pkg.exports["."]).toBe("./dist/src/index.js");
    expect(pkg.types).toBe("dist/src/index.d.ts");
  });

  it("has the routing client, the engine, the forecaster, the planner, the stores and the config", () => {
    const names = [
      // the routing client for applications (docs/AGENT.md) and its errors
      "ShardClient",
      "RedirectCycleError",
      "resolveClientToken",
      // the LSMM (the specification's get_shard_location, update_access_pattern, trigger_resharding)
      "Lsmm",
      "initialLayout",
      "Segmenter",
      // predict_access_pattern and the forecasting library
      "predictAccessPattern",
      "forecastMany",
      "selectModel",
      "parseSeriesCsv",
      // plan_migration
      "MigrationPlanner",
      "computePlan",
      "checkPlanFresh",
      // the stores and the config
      "EmbeddedStore",
      "ConsulStore",
      "openStore",
      "loadConfig",
      "UserError",
    ];
    for (const name of names) expect(typeof (api as Record<string, unknown>)[name], name).toBe("function");
    expect(typeof api.MigrationPlanner.prototype.planMigration).toBe("function");
  });
});
