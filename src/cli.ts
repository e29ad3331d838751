/**
 * Builds the commander program and runs it with one top-level error handler.
 * Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 precondition not met, 130 interrupted
 * (SIGINT), 143 interrupted (SIGTERM).
 */
import { Command, CommanderError, Option } from "commander";
import { createRequire } from "node:module";
import { commands } from "./commands/index.js";
import { createContext } from "./commands/context.js";
import { ExitCode, UsageError, UserError } from "./errors.js";
import { printable, processIO, type IO } from "./output.js";

const require = createRequire(import.meta.url);

export function version(): string {
  for (const path of ["../package.json", "../../package.json"]) {
    try {
      return (require(path) as { version: string }).version;
    } catch {
      // try the next layout (source vs dist)
    }
  }
  return "0.0.0";
}

export function buildProgram(io: IO = processIO, env: NodeJS.ProcessEnv = process.env): Command {
  const program = new Command("shardctl");
  program
    .description(
      "Cluster manager for sharded, log-based data: reshards the key space by access frequency, " +
        "forecasts where each segment's traffic will come from, and migrates log shards live " +
        "to the nodes closest to it before it arrives.",
    )
    .version(version(), "-V, --version", "print the version and exit")
    .option(
      "-c, --config <file>",
      "config file, at most 1 MiB (default: ./shardctl.yaml, then ~/.config/shardctl/config.yaml)",
    )
    .option(
      "-d, --data-dir <dir>",
      "data directory for the embedded store and local state (default: .shardctl)",
    )
    .addOption(new Option("--store <kind>", "location store").choices(["embedded", "consul"]))
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({
      writeOut: (s) => io.out.write(s),
      writeErr: (s) => io.err.write(s),
    })
    .addHelpText(
      "after",
      `
Exit codes:
  0  ok
  1  the operation failed
  2  usage error: bad flag, key or input file; nothing was changed
  3  precondition not met (store not initialised, stale plan, lock held); nothing was changed
  130  interrupted by Ctrl-C (migrate --apply, reshard --apply): the step in flight was
     rolled back or finished first; a second Ctrl-C exits at once
  143  the same, stopped by SIGTERM

Environment:
  SHARDCTL_CONFIG, SHARDCTL_DATA_DIR, SHARDCTL_STORE, SHARDCTL_SEGMENTS, SHARDCTL_ZONES,
  SHARDCTL_TOKEN, SHARDCTL_CONSUL_PREFIX, CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
  CONSUL_HTTP_TOKEN_FILE (the token read from a file; CONSUL_HTTP_TOKEN wins),
  SHARDCTL_CONSUL_TIMEOUT (seconds per Consul request, 0.001 to 300; default 5),
  SHARDCTL_INVENTORY (deploy, node, undeploy: the inventory file; default ./inventory.yaml),
  SHARDCTL_DEPLOY_LOCK_TTL (TTL in seconds of the Consul session holding the deploy lock)

See man shardctl for the configuration file.`,
    );
  // an option given an empty value (`--zone ''`, `--out ''`) was read as not given by the commands'
  // `if (opts.x)` checks: refused here, once for every option of every command
  program.hook("preAction", (_root, action) => refuseEmptyOptions(action));
  const ctx = createContext(program, io, env);
  for (const register of commands) register(program, ctx);
  program.exitOverride();
  for (const sub of program.commands) sub.exitOverride();
  return program;
}

/** An option given the empty string (or a list holding one) is a usage error naming it: the command's or a global one. */
export function refuseEmptyOptions(action: Command): void {
  for (let cmd: Command | null = action; cmd; cmd = cmd.parent) {
    for (const opt of cmd.options) {
      const value: unknown = cmd.getOptionValue(opt.attributeName());
      if (value === "" || (Array.isArray(value) && value.includes(""))) {
        throw new UsageError(`${opt.long ?? opt.short} is empty`, {
          hint: "give it a value, or leave the option out",
        });
      }
    }
  }
}

/** Runs the CLI and returns the exit code (never calls process.exit itself). */
export async function runCli(argv: string[], io: IO = processIO, env = process.env): Promise<number> {
  const program = buildProgram(io, env);
  try {
    await program.parseAsync(argv, { from: "user" });
    return ExitCode.Ok;
  } catch (err) {
    return reportError(err, io);
  }
}

export function reportError(err: unknown, io: IO): number {
  if (err instanceof CommanderError) {
    if (err.code === "commander.helpDisplayed" || err.code === "commander.version") return ExitCode.Ok;
    // help asked for (`shardctl help`) is 0; help shown because a subcommand is missing
    // (`shardctl`, `shardctl forecast`) or unknown (`shardctl help nope`) is a usage error
    if (err.code === "commander.help") return err.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
    // commander already printed the message
    return ExitCode.Usage;
  }
  if (err instanceof UserError) {
    // a message may quote a key or a file's line: shown with its control characters escaped
    io.err.write(`error: ${printable(err.message, true)}\n`);
    if (err.hint) io.err.write(`hint: ${printable(err.hint, true)}\n`);
    return err.exitCode;
  }
  const e = err as Error;
  io.err.write(`internal error (this is a bug in shardctl): ${e?.stack ?? String(err)}\n`);
  return ExitCode.Failed;
}
