/**
 * What every command receives: its IO streams and a lazily loaded config.
 * Commands parse options, call a use-case `runX(opts, deps)` and print.
 */
import type { Command } from "commander";
import { loadConfig, type Config } from "../config.js";
import { processIO, type IO } from "../output.js";

export interface CommandContext {
  io: IO;
  /** Loads the config once (global --config / --data-dir / --store applied). */
  config(): Config;
  /** The config file config() read (absolute), if it read one: processes started for this one read it too. */
  configFile?(): string | undefined;
  env: NodeJS.ProcessEnv;
}

export function createContext(program: Command, io: IO = processIO, env = process.env): CommandContext {
  let cached: Config | undefined;
  let file: string | undefined;
  return {
    io,
    env,
    configFile() {
      this.config();
      return file;
    },
    config() {
      if (!cached) {
        const globals = program.opts<{ config?: string; dataDir?: string; store?: string }>();
        const store = globals.store === "embedded" || globals.store === "consul" ? globals.store : undefined;
        const { config, source } = loadConfig({ file: globals.config, env, store });
        file = source;
        if (globals.dataDir) config.dataDir = globals.dataDir;
        if (globals.store === "embedded" || globals.store === "consul") config.store = globals.store;
        cached = config;
      }
      return cached;
    },
  };
}

/** A command module adds its subcommand(s) to the program. */
export type RegisterCommand = (program: Command, ctx: CommandContext) => void;
