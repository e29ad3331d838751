/** Runs shardctl in-process (runCli with collected output) or as a real process. */
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { runCli } from "../../src/cli.js";

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "../..");

class Collect extends Writable {
  text = "";
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

export async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  const out = new Collect();
  const err = new Collect();
  const code = await runCli(args, { out, err }, { ...env });
  return { code, out: out.text, err: err.text };
}

/** The command that starts shardctl as a process: the build if present, else the TypeScript source through tsx. */
export function shardctlCommand(): { command: string; args: string[] } {
  const built = join(repoRoot, "dist/bin/shardctl.js");
  if (existsSync(built)) return { command: process.execPath, args: [built] };
  return { command: process.execPath, args: ["--import", "tsx", join(repoRoot, "bin/shardctl.ts")] };
}

export function runProcess(
  args: (string | Buffer)[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string | Buffer; timeout?: number } = {},
): SpawnSyncReturns<string> {
  const { command, args: pre } = shardctlCommand();
  return spawnSync(command, [...pre, ...(args as string[])], {
    cwd: opts.cwd ?? repoRoot,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...opts.env },
    input: opts.input,
    encoding: "utf8",
    timeout: opts.timeout ?? 60_000,
  });
}

/** A shardctl process started with `args` and `env` (nothing else of ours), its output collected as it comes. */
export function watchedProcess(args: string[], env: NodeJS.ProcessEnv) {
  const { command, args: pre } = shardctlCommand();
  const child: ChildProcess = spawn(command, [...pre, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  let ended = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => {
      ended = true;
      resolve({ code, signal });
    }),
  );
  return {
    child,
    exited,
    out: () => out,
    err: () => err,
    /** Waits until stderr (where progress goes) matches. */
    async waitFor(re: RegExp, ms = 90_000): Promise<RegExpMatchArray> {
      const deadline = Date.now() + ms;
      for (;;) {
        const m = re.exec(err);
        if (m) return m;
        if (ended) throw new Error(`${args[0]} ended before ${re}:\n${err}`);
        if (Date.now() > deadline) throw new Error(`no ${re} within ${ms} ms:\n${err}`);
        await sleep(5);
      }
    },
  };
}
