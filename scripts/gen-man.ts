/**
 * Writes man/shardctl-<command>.1 for every command from the program itself
 * (usage, description, options, and the examples of its --help), so the
 * pages cannot drift from the CLI. `npm run man` runs it; a test checks the
 * committed pages are current.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { manPages } from "../src/manpages.js";

const out = join(fileURLToPath(new URL("..", import.meta.url)), "man");
for (const page of manPages()) writeFileSync(join(out, page.file), page.text);
process.stderr.write(`wrote ${manPages().length} man pages to ${out}\n`);
