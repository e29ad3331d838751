#!/usr/bin/env node
// Entry point: builds the program and exits with its code. Nothing else.
import { runCli } from "../src/cli.js";

// a reader that stops early (`shardctl shards --json | head -1`) closes the pipe: stop quietly, as
// commands that die of SIGPIPE do, instead of an unhandled EPIPE error with a stack
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
}

process.exitCode = await runCli(process.argv.slice(2));
