/**
 * The module API of shardctl: the engine (LSMM), the predictive migration
 * engine's planner (planMigration), the forecasting library
 * (predictAccessPattern), the routing client for applications, the stores and
 * the config loader.
 */
export * from "./engine/index.js";
export * from "./engine/planner.js";
export * from "./forecast/index.js";
export * from "./client/shard-client.js";
export { EmbeddedStore } from "./store/embedded.js";
export { ConsulStore } from "./consul/store.js";
export { openStore } from "./store/index.js";
export { loadConfig, defaultConfig, type Config } from "./config.js";
export { resolveClientToken } from "./cluster/local.js";
export { UserError, UsageError, PreconditionError, ExitCode } from "./errors.js";
