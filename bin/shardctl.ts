#!/usr/bin/env node
// Entry point: builds the program and exits with its code. Nothing else.
import { runCli } from "../src/cli.js";

process.exitCode = await runCli(process.argv.slice(2));
