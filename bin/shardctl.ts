#!/usr/bin/env node
// Entry point: builds the program and exits with its code. Nothing else.
import { runCli } from "../src/cli.js";

// A reader that stops early (`shardctl shards --json | head -1`) closes the pipe: stop quietly, as
// commands that die of SIGPIPE do, instead of an unhandled EPIPE error with a stack. Any other
// failure to write (a full disk, /dev/full, an I/O error) is the command's failure: said on
// stderr when that is stdout's, exit 1; never an uncaught error with a stack.
for (const [name, stream] of [
  ["standard output", process.stdout],
  ["standard error", process.stderr],
] as const) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    if (stream === process.stdout) {
      try {
        process.stderr.write(`error: cannot write ${name}: ${err.message}\n`);
      } catch {
        // stderr is gone too: the exit status says it
      }
    }
    process.exit(1);
  });
}

process.exitCode = await runCli(process.argv.slice(2));
