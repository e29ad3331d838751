/** The module API of shardctl: the engine (LSMM), the stores, and the config loader. */
export * from "./engine/index.js";
export { EmbeddedStore } from "./store/embedded.js";
export { openStore } from "./store/index.js";
export { loadConfig, defaultConfig, type Config } from "./config.js";
export { UserError, UsageError, PreconditionError, ExitCode } from "./errors.js";
