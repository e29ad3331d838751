/** For tests of the built CLI on paths and files a user gets wrong: the refusal, and that nothing changed. */
import { readdirSync } from "node:fs";
import { expect } from "vitest";
import { runProcess } from "./cli.js";

/** Every file and directory under `root`, relative, sorted: what a failure must not change. */
export function tree(root: string): string[] {
  return readdirSync(root, { recursive: true, encoding: "utf8" }).sort();
}

/**
 * Runs shardctl in `dir` and expects it refused: exit `status` (2 unless told), `error: ` and
 * `naming` on stderr, no internal error or stack, and nothing under `dir` created or removed.
 * `timeoutMs` bounds the run (a read that never ends shows as a null status).
 */
export function expectRefused(
  dir: string,
  args: string[],
  naming: string,
  opts: { env?: NodeJS.ProcessEnv; status?: number; timeoutMs?: number } = {},
) {
  const before = tree(dir);
  const r = runProcess(args, { cwd: dir, env: opts.env, timeout: opts.timeoutMs });
  expect(r.stderr, args.join(" ")).not.toMatch(/internal error|\n\s+at /);
  expect(r.status, `${args.join(" ")}\n${r.stderr}`).toBe(opts.status ?? 2);
  expect(r.stderr).toMatch(/^error: /m);
  expect(r.stderr).toContain(naming);
  expect(tree(dir), args.join(" ")).toEqual(before);
  return r;
}
