/**
 * Configuration: defaults < config file < environment. The file is
 * `shardctl.yaml` in the working directory or `~/.config/shardctl/config.yaml`
 * (or the path in --config / SHARDCTL_CONFIG). Validated with zod; a wrong
 * type is a UsageError naming the field and the file.
 */
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { yamlProblem } from "./yaml-problem.js";
import { z } from "zod";
import { UsageError } from "./errors.js";
import { readInputText } from "./input-file.js";
import { parsePositiveInt } from "./numbers.js";
import { checkZoneNames, ZONE_NAME_PATTERN } from "./engine/access-windows.js";
import { checkConsulToken, parseConsulAddr } from "./consul/address.js";

const levelSchema = z.object({
  resolutionSeconds: z.number().int().positive(),
  slots: z.number().int().min(1).max(10_000),
});

export const configSchema = z
  .object({
    /** Where the embedded store, access windows and local cluster state live. */
    dataDir: z.string().min(1).default(".shardctl"),
    store: z.enum(["embedded", "consul"]).default("embedded"),
    /** Number of equal hash ranges the key space is divided into. */
    segments: z
      .number()
      .int()
      .min(1)
      .max(1 << 20)
      .default(4096),
    /** Origin zones, in a fixed order (the order indexes the access windows). */
    zones: z.array(z.string().regex(ZONE_NAME_PATTERN)).min(1).max(16).default(["a", "b", "c"]),
    limits: z
      .object({
        maxKeyBytes: z
          .number()
          .int()
          .min(1)
          // the log format stores a key's length in 16 bits
          .max(65535)
          .default(1024),
        maxValueBytes: z
          .number()
          .int()
          .min(1)
          .max(256 * 1024 * 1024)
          .default(16 * 1024 * 1024),
        /**
         * Connections an agent accepts at once, on each listener (HTTP, binary); more are closed as they
         * arrive. Below the file descriptor limit, which the shards' logs need too.
         */
        maxConnections: z.number().int().min(1).max(1_000_000).default(1024),
      })
      .prefault({}),
    windows: z
      .object({
        levels: z
          .array(levelSchema)
          .min(1)
          .max(6)
          .default([
            { resolutionSeconds: 1, slots: 10 },
            { resolutionSeconds: 60, slots: 60 },
            { resolutionSeconds: 3600, slots: 48 },
          ]),
      })
      .prefault({}),
    reshard: z
      .object({
        /** A segment above this rate (accesses/s) gets a dedicated shard. */
        splitRate: z.number().positive().default(50),
        /** A shared shard below this rate (accesses/s) merges with a neighbour. */
        mergeRate: z.number().nonnegative().default(5),
        /** No shared shard carries more than this (accesses/s). */
        shardLoadCap: z.number().positive().default(200),
        /** Fraction under a threshold a value must fall before a decision is undone. */
        hysteresis: z.number().min(0).max(0.9).default(0.2),
        /** A shard changed less than this long ago is left alone. */
        minDwellSeconds: z.number().nonnegative().default(300),
        /** Window over which the access rate is measured. */
        rateWindowSeconds: z.number().int().positive().default(600),
      })
      .prefault({}),
    consul: z
      .object({
        addr: z.string().default("127.0.0.1:8500"),
        token: z.string().optional(),
        prefix: z.string().default("shardctl/"),
      })
      .prefault({}),
    agent: z
      .object({
        token: z.string().optional(),
        /** An HTTP request's headers must arrive whole within this (slowloris). */
        headersTimeoutSeconds: z.number().positive().max(3600).default(10),
        /**
         * An HTTP connection with a request under way that neither sends nor receives a byte for this
         * long is closed (there is no bound on a whole request: a snapshot upload streams for as long
         * as it flows).
         */
        idleTimeoutSeconds: z.number().positive().max(86_400).default(60),
        /** An idle keep-alive HTTP connection is closed after this. */
        keepAliveTimeoutSeconds: z.number().positive().max(3600).default(65),
        /** A binary protocol frame must arrive whole within this of its first byte. */
        frameTimeoutSeconds: z.number().positive().max(3600).default(30),
      })
      .prefault({}),
  })
  .strict();

export type Config = z.infer<typeof configSchema>;

/** A config file is a few dozen lines: reading stops past this (--config /dev/zero must not fill memory). */
export const MAX_CONFIG_BYTES = 1024 * 1024;

export interface LoadConfigOptions {
  /** Explicit file (--config); an explicit file that does not exist is an error. */
  file?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  home?: string;
  /** The global --store flag: wins over SHARDCTL_STORE and the file (a bad SHARDCTL_STORE it replaces is not an error). */
  store?: "embedded" | "consul";
}

export interface LoadedConfig {
  config: Config;
  /** The file read, if any. */
  source?: string;
}

export function defaultConfig(): Config {
  return configSchema.parse({});
}

export function loadConfig(opts: LoadConfigOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  if (opts.file === undefined) refuseEmptyEnv(env, "SHARDCTL_CONFIG");
  const explicit = opts.file ?? env.SHARDCTL_CONFIG;
  let source: string | undefined;
  let raw: unknown = {};
  if (explicit) {
    source = resolve(cwd, explicit);
    if (!existsSync(source)) {
      throw new UsageError(`config file ${source} does not exist`, {
        hint: "pass an existing file with --config, or unset SHARDCTL_CONFIG",
      });
    }
  } else {
    for (const candidate of [
      join(cwd, "shardctl.yaml"),
      join(opts.home ?? homedir(), ".config/shardctl/config.yaml"),
    ]) {
      if (existsSync(candidate)) {
        source = candidate;
        break;
      }
    }
  }
  if (source) {
    const text = readInputText(source, "config file", MAX_CONFIG_BYTES, {
      tooLarge: () =>
        new UsageError(`config file ${source} is larger than 1 MiB, the most a config file may hold`, {
          hint: "check that it is the file you meant (a device or a pipe that never ends?)",
        }),
    });
    try {
      raw = parseYaml(text) ?? {};
    } catch (err) {
      // the parser's first line says what and where; the lines it quotes are left out (they may hold a token)
      throw new UsageError(`config file ${source} is not valid YAML: ${yamlProblem(err)}`);
    }
    if (typeof raw !== "object" || Array.isArray(raw)) {
      throw new UsageError(`config file ${source} must hold a mapping (key: value lines) at the top level`);
    }
    checkConsulSection(raw as Record<string, unknown>, source);
  }
  const fromEnv = new Map<string, string>();
  const merged = applyEnv(raw as Record<string, unknown>, env, fromEnv);
  if (opts.store) {
    merged.store = opts.store;
    fromEnv.delete("store");
  }
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) {
    // each problem says where the value came from: an environment variable, or the file
    const problems = parsed.error.issues
      .map((i) => {
        const path = i.path.join(".");
        const variable = fromEnv.get(path) ?? fromEnv.get(String(i.path[0]));
        const origin = variable ? ` (from ${variable})` : "";
        return `  ${path || "(top level)"}${origin}: ${i.message}`;
      })
      .join("\n");
    const fileProblem = parsed.error.issues.some(
      (i) => !fromEnv.has(i.path.join(".")) && !fromEnv.has(String(i.path[0])),
    );
    const where = source && fileProblem ? ` in ${source}` : "";
    throw new UsageError(`invalid configuration${where}:\n${problems}`, {
      hint: "see `man shardctl` (CONFIGURATION, ENVIRONMENT) for every field and its type",
    });
  }
  const config = parsed.data;
  // `dataDir: ~/shardctl` in a file (or a quoted SHARDCTL_DATA_DIR) means the home directory, as a
  // shell would read it; a directory literally named "~" was made instead
  if (config.dataDir === "~" || config.dataDir.startsWith("~/"))
    config.dataDir = join(opts.home ?? homedir(), config.dataDir.slice(1));
  if (new Set(config.zones).size !== config.zones.length) {
    throw new UsageError(`invalid configuration: zones must be distinct (got ${config.zones.join(",")})`);
  }
  checkZoneNames(config.zones, "invalid configuration: ");
  if (config.reshard.mergeRate >= config.reshard.splitRate) {
    throw new UsageError("invalid configuration: reshard.mergeRate must be below reshard.splitRate");
  }
  return { config, source };
}

/**
 * The file's Consul address and token are checked here, naming the file (the
 * environment's CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN are checked when a
 * command opens Consul: a shell may set them for the consul CLI, and a
 * command on the embedded store must not fail over them). Wrong types are
 * left to the schema.
 */
function checkConsulSection(raw: Record<string, unknown>, source: string): void {
  const consul = raw.consul;
  if (!consul || typeof consul !== "object" || Array.isArray(consul)) return;
  const { addr, token } = consul as Record<string, unknown>;
  if (typeof addr === "string") parseConsulAddr(addr, `consul.addr in ${source}`);
  if (typeof token === "string") checkConsulToken(token, `consul.token in ${source}`);
}

/** Environment variables override the file. Each is validated with the rest. */
function applyEnv(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  /** Filled with each config path an environment variable set, and that variable. */
  fromEnv: Map<string, string> = new Map(),
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...raw };
  const sub = (key: string): Record<string, unknown> => {
    const v = out[key];
    const copy = v && typeof v === "object" && !Array.isArray(v) ? { ...(v as Record<string, unknown>) } : {};
    out[key] = copy;
    return copy;
  };
  // set but empty is a mistake (`SHARDCTL_DATA_DIR=$UNSET_VAR`), not the default
  for (const name of ["SHARDCTL_DATA_DIR", "SHARDCTL_STORE", "SHARDCTL_SEGMENTS", "SHARDCTL_ZONES"])
    refuseEmptyEnv(env, name);
  // each variable sets one path of the config; an error in its value names the variable
  const set = (
    target: Record<string, unknown>,
    key: string,
    path: string,
    variable: string,
    value: unknown,
  ) => {
    target[key] = value;
    fromEnv.set(path, variable);
  };
  if (env.SHARDCTL_DATA_DIR) set(out, "dataDir", "dataDir", "SHARDCTL_DATA_DIR", env.SHARDCTL_DATA_DIR);
  if (env.SHARDCTL_STORE) set(out, "store", "store", "SHARDCTL_STORE", env.SHARDCTL_STORE);
  // decimal digits only, as the flags take them (Number() would read 0x1000, 4.096e3, " 4096")
  if (env.SHARDCTL_SEGMENTS) {
    const n = parsePositiveInt(env.SHARDCTL_SEGMENTS, "SHARDCTL_SEGMENTS (the number of segments)");
    set(out, "segments", "segments", "SHARDCTL_SEGMENTS", n);
  }
  if (env.SHARDCTL_ZONES) {
    const zones = env.SHARDCTL_ZONES.split(",").map((z) => z.trim());
    set(out, "zones", "zones", "SHARDCTL_ZONES", zones);
  }
  if (env.CONSUL_HTTP_ADDR)
    set(sub("consul"), "addr", "consul.addr", "CONSUL_HTTP_ADDR", env.CONSUL_HTTP_ADDR);
  if (env.CONSUL_HTTP_TOKEN)
    set(sub("consul"), "token", "consul.token", "CONSUL_HTTP_TOKEN", env.CONSUL_HTTP_TOKEN);
  else if (env.CONSUL_HTTP_TOKEN_FILE) {
    const token = readConsulTokenFile(env.CONSUL_HTTP_TOKEN_FILE);
    set(sub("consul"), "token", "consul.token", "CONSUL_HTTP_TOKEN_FILE", token);
  }
  if (env.SHARDCTL_CONSUL_PREFIX)
    set(sub("consul"), "prefix", "consul.prefix", "SHARDCTL_CONSUL_PREFIX", env.SHARDCTL_CONSUL_PREFIX);
  if (env.SHARDCTL_TOKEN) set(sub("agent"), "token", "agent.token", "SHARDCTL_TOKEN", env.SHARDCTL_TOKEN);
  return out;
}

function refuseEmptyEnv(env: NodeJS.ProcessEnv, name: string): void {
  if (env[name] === "")
    throw new UsageError(`${name} is set but empty`, {
      hint: `give it a value, or unset it (unset ${name})`,
    });
}

/** A Consul ACL token is a UUID; its file holds little more (a newline, a comment at most). */
export const MAX_TOKEN_FILE_BYTES = 64 * 1024;

const TOKEN_FILE_HINT = "point it at a readable file holding the Consul ACL token, or set CONSUL_HTTP_TOKEN";

/**
 * Consul's own CONSUL_HTTP_TOKEN_FILE: the token is the file's content, surrounding whitespace
 * dropped. Read with a bound: the variable pointing at /dev/zero or a pipe is refused at once.
 */
function readConsulTokenFile(file: string): string {
  let text: string;
  try {
    text = readInputText(file, "CONSUL_HTTP_TOKEN_FILE", MAX_TOKEN_FILE_BYTES, {
      tooLarge: () =>
        new UsageError(
          `CONSUL_HTTP_TOKEN_FILE ${file} is larger than 64 KiB: it does not hold a token (a device, or another file?)`,
        ),
    });
  } catch (err) {
    // readInputText's message names the file; the hint says what the variable is for
    if (!(err instanceof UsageError)) throw err;
    throw new UsageError(err.message, { hint: TOKEN_FILE_HINT, cause: err });
  }
  const token = text.trim();
  if (!token || /\s/.test(token))
    throw new UsageError(`CONSUL_HTTP_TOKEN_FILE ${file} does not hold a token (one word expected)`);
  checkConsulToken(token, `the token in CONSUL_HTTP_TOKEN_FILE ${file}`);
  return token;
}
