/**
 * The single-file agent bundle that deploy ships: all of shardctl (the CLI
 * entry, so `node agent.mjs agent ...` runs the agent) and its dependencies
 * in one ESM file, plus its SHA-256, which deploy verifies on the remote side
 * and uses to tell "up to date" from "upgrade".
 *
 * It is built with esbuild (a dependency of shardctl); a prebuilt bundle can
 * be passed instead with `deploy --bundle FILE`.
 */
import { createHash } from "node:crypto";
import { closeSync, existsSync, openSync, readSync, statSync, type Stats } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { UsageError, UserError } from "../errors.js";
import { makeDirsFor } from "../fs-paths.js";
import { formatBytes } from "../output.js";

export interface Bundle {
  path: string;
  sha256: string;
  bytes: number;
}

/** The SHA-256 of a file, read a MiB at a time (a bundle is never held whole). */
export function sha256File(path: string): string {
  const hash = createHash("sha256");
  const fd = openSync(path, "r");
  try {
    const chunk = Buffer.allocUnsafe(1 << 20);
    for (let n; (n = readSync(fd, chunk, 0, chunk.length, null)) > 0;) hash.update(chunk.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

/** Far above any agent bundle (a few MiB): a larger file is not one. */
export const MAX_BUNDLE_BYTES = 256 * 1024 * 1024;

/** A bundle file given on the command line: a regular file of at most MAX_BUNDLE_BYTES. */
export function loadBundle(path: string): Bundle {
  const abs = resolve(path);
  const hint = "give the agent bundle file (agent.mjs), or omit --bundle to build one from this checkout";
  let st: Stats;
  try {
    st = statSync(abs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR")
      throw new UsageError(`the bundle ${abs} does not exist`, { hint, cause: err });
    throw new UsageError(`cannot read the bundle ${abs}: ${(err as Error).message}`, { hint, cause: err });
  }
  if (st.isDirectory()) throw new UsageError(`the bundle ${abs} is a directory`, { hint });
  if (!st.isFile())
    throw new UsageError(`the bundle ${abs} is not a regular file (a device, a pipe or a socket)`, { hint });
  if (st.size > MAX_BUNDLE_BYTES)
    throw new UsageError(
      `the bundle ${abs} is ${formatBytes(st.size)}: an agent bundle is a few MiB (at most ${formatBytes(MAX_BUNDLE_BYTES)})`,
      { hint },
    );
  try {
    return { path: abs, sha256: sha256File(abs), bytes: st.size };
  } catch (err) {
    throw new UsageError(`cannot read the bundle ${abs}: ${(err as Error).message}`, { hint, cause: err });
  }
}

/** The CLI entry of this checkout: the TypeScript source, or the build when running from dist. */
export function defaultEntry(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const candidate of [join(here, "../../bin/shardctl.ts"), join(here, "../../bin/shardctl.js")]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new UserError("cannot find bin/shardctl.ts or dist/bin/shardctl.js to bundle", {
    hint: "pass a prebuilt bundle with --bundle FILE",
  });
}

/**
 * Bundled CommonJS dependencies call `require` for Node built-ins and read
 * `__dirname`, which an ESM file does not have; these define them from the
 * bundle's own URL.
 */
const CJS_SHIM = [
  'import { createRequire as __shardctlCreateRequire } from "node:module";',
  'import { fileURLToPath as __shardctlFileURLToPath } from "node:url";',
  'import { dirname as __shardctlDirname } from "node:path";',
  "const require = __shardctlCreateRequire(import.meta.url);",
  "const __filename = __shardctlFileURLToPath(import.meta.url);",
  "const __dirname = __shardctlDirname(__filename);",
].join(" ");

/**
 * Optional pieces that cannot go into one JavaScript file: native addons
 * (ssh2's `cpu-features` and `sshcrypto.node`, both loaded in a try/catch
 * with a pure-JS fallback) and Ink's `react-devtools-core` (loaded only with
 * DEV=true). They resolve to a stub that throws when loaded, so their callers
 * take the fallback. Nothing is left external.
 */
const OPTIONAL_MODULES = /(^cpu-features$|^react-devtools-core$|\.node$)/;

const stubOptional = {
  name: "stub-optional-modules",
  setup(build: import("esbuild").PluginBuild) {
    build.onResolve({ filter: OPTIONAL_MODULES }, (args) => ({
      path: args.path,
      namespace: "shardctl-stub",
    }));
    build.onLoad({ filter: /.*/, namespace: "shardctl-stub" }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is not part of the shardctl agent bundle`)});`,
      loader: "js",
    }));
  },
};

export async function buildBundle(outFile: string, entry: string = defaultEntry()): Promise<Bundle> {
  let esbuild: typeof import("esbuild");
  try {
    esbuild = await import("esbuild");
  } catch {
    throw new UserError("building the agent bundle needs the esbuild package, which is not installed here", {
      hint: "pass a prebuilt bundle with --bundle FILE (built from a checkout with `npm ci`)",
    });
  }
  // the bundle goes under the data directory: a file in the way is a usage error, not a stack
  makeDirsFor(
    dirname(outFile),
    "the directory for the agent bundle",
    "move what is in the way, give another -d/--data-dir, or pass a prebuilt bundle with --bundle FILE",
    // (what deploy uploads and runs on every node: nobody else may swap it)
    0o700,
  );
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile: outFile,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    external: [],
    plugins: [stubOptional],
    banner: { js: CJS_SHIM },
    legalComments: "none",
    logLevel: "silent",
    write: true,
  });
  if (result.errors.length) {
    throw new UserError(`esbuild could not bundle ${entry}: ${result.errors.map((e) => e.text).join("; ")}`);
  }
  return { path: outFile, sha256: sha256File(outFile), bytes: statSync(outFile).size };
}
