/**
 * The inventory: which machines run agents, how to reach them over SSH, and
 * where each agent keeps its files. A YAML file with an optional `defaults:`
 * mapping and a `nodes:` list; validated with zod, and every problem is
 * reported naming the node and the field (`node n2 (nodes[1]).keyFile: ...`).
 * See docs/DEPLOY.md for the format.
 */
import { statSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, posix, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { yamlProblem } from "../yaml-problem.js";
import { z } from "zod";
import { NODE_ID_PATTERN } from "../engine/location-map.js";
import { UsageError } from "../errors.js";
import { readInputText } from "../input-file.js";

export const DEFAULT_AGENT_PORT = 7400;
export const DEFAULT_DATA_DIR = "/var/lib/shardctl";

/** Host names and addresses: no spaces, no shell or option characters, not starting with `-`. */
const HOST = /^(?!-)[A-Za-z0-9._:-]{1,253}$/;
const USER = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;
const ADDRESS = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}$/;
/** Consul's HTTP address as CONSUL_HTTP_ADDR gives it: host[:port], optionally with http:// or https://. */
const CONSUL_ADDRESS = /^(?:https?:\/\/)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?$/;

const port = z.number().int().min(1).max(65535);
/** Absolute, printable, no control characters (quoted everywhere, but a newline in a path is never wanted). */
const remotePath = z
  .string()
  .min(1)
  .max(1024)
  .refine((p) => p.startsWith("/"), "must be an absolute path")
  .refine((p) => !hasControlChar(p), "must not contain control characters (newline, tab, ...)")
  .refine((p) => !p.split("/").includes(".."), "must not contain `..`")
  // one spelling per directory (`/srv//a/./b/` is `/srv/a/b`), so that two nodes sharing one are caught
  .transform((p) => {
    const n = posix.normalize(p);
    return n.length > 1 ? n.replace(/\/+$/, "") : n;
  })
  // `//` or `/.` is `/`: deploy would make it 0700, undeploy --purge remove what is in it
  .refine((p) => p !== "/", "must not be the root directory (/)");

/** HOST:PORT with the port in 1..65535. */
const address = z
  .string()
  .regex(ADDRESS, "must be HOST:PORT")
  .refine((a) => {
    const p = Number(a.slice(a.lastIndexOf(":") + 1));
    return p >= 1 && p <= 65535;
  }, "the port must be 1..65535");

function portOf(addr: string): number {
  return Number(addr.slice(addr.lastIndexOf(":") + 1));
}

const capacitySchema = z.union([
  z
    .number()
    .int()
    .min(1)
    .max(1_000_000)
    .transform((shards) => ({ shards })),
  z
    .object({
      /** Shard slots. */
      shards: z.number().int().min(1).max(1_000_000).default(64),
      cpus: z.number().positive().max(4096).optional(),
      memoryMiB: z.number().int().positive().optional(),
      diskGiB: z.number().positive().optional(),
    })
    .strict(),
]);

const nodeFields = {
  host: z.string().regex(HOST, "must be a host name or an IP address (letters, digits, . : - _)"),
  port,
  user: z.string().regex(USER, "must be a user name (letters, digits, _ . -)"),
  keyFile: z.string().min(1).max(4096),
  // (Node refuses to load an ES module from a path holding a backslash: the agent could never start)
  dataDir: remotePath.refine(
    (p) => !p.includes("\\"),
    "must not contain a backslash (Node.js cannot load the agent's module from such a path)",
  ),
  agentPort: port,
  capacity: capacitySchema,
  /** Where the node's agent reaches Consul, with the Consul store (default: the deployer's consul.addr). */
  consulAddr: z.string().regex(CONSUL_ADDRESS, "must be host:port or http(s)://host:port"),
};

const defaultsSchema = z
  .object({
    port: nodeFields.port,
    user: nodeFields.user,
    keyFile: nodeFields.keyFile,
    dataDir: nodeFields.dataDir,
    agentPort: nodeFields.agentPort,
    capacity: nodeFields.capacity,
    consulAddr: nodeFields.consulAddr,
    zone: z.string().min(1),
  })
  .partial()
  .strict();

const nodeSchema = z
  .object({
    id: z.string().regex(NODE_ID_PATTERN, `must match ${NODE_ID_PATTERN.source}`),
    host: nodeFields.host,
    port: nodeFields.port.optional(),
    user: nodeFields.user.optional(),
    keyFile: nodeFields.keyFile.optional(),
    zone: z.string().min(1).optional(),
    capacity: nodeFields.capacity.optional(),
    dataDir: nodeFields.dataDir.optional(),
    hostKey: z
      .string()
      .regex(
        FINGERPRINT,
        "must be a fingerprint as `ssh-keygen -l` prints it: SHA256: and 43 base64 characters",
      )
      .optional(),
    agentPort: nodeFields.agentPort.optional(),
    consulAddr: nodeFields.consulAddr.optional(),
    /** Where the agent listens on the node (default 0.0.0.0:agentPort). */
    listen: address.optional(),
    /** The address clients and the store use for the agent (default host and the listen port). */
    advertise: address.optional(),
  })
  .strict();

const inventorySchema = z
  .object({
    defaults: defaultsSchema.optional(),
    nodes: z.array(z.unknown()).min(1, "must list at least one node"),
  })
  .strict();

export interface Capacity {
  shards: number;
  cpus?: number;
  memoryMiB?: number;
  diskGiB?: number;
}

export interface InventoryNode {
  id: string;
  host: string;
  port: number;
  user: string;
  /** Absolute path of the private key; undefined: the SSH agent (SSH_AUTH_SOCK). */
  keyFile?: string;
  zone: string;
  capacity: Capacity;
  dataDir: string;
  hostKey?: string;
  agentPort: number;
  listen: string;
  advertise: string;
  /** Where the agent reaches Consul, when the inventory says (else the deployer's consul.addr). */
  consulAddr?: string;
}

export interface Inventory {
  source: string;
  nodes: InventoryNode[];
}

function expandHome(p: string, home: string, baseDir: string): string {
  if (p === "~") return home;
  if (p.startsWith("~/")) return resolve(home, p.slice(2));
  return isAbsolute(p) ? p : resolve(baseDir, p);
}

function describeIssues(issues: z.core.$ZodIssue[], prefix: string): string[] {
  return issues.map((i) => {
    const field = i.path.length ? i.path.join(".") : "(the node)";
    return `${prefix}${field}: ${i.message}`;
  });
}

export interface ParseInventoryOptions {
  /** Where relative keyFile paths are resolved from (the inventory's directory). */
  baseDir?: string;
  home?: string;
  /** Zones the config allows; a node in another zone is refused. */
  zones?: readonly string[];
  /** Whether an SSH agent is available (SSH_AUTH_SOCK) for nodes without keyFile. */
  haveAgent?: boolean;
}

export function parseInventory(text: string, source: string, opts: ParseInventoryOptions = {}): Inventory {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new UsageError(`inventory ${source} is not valid YAML: ${yamlProblem(err)}`);
  }
  const fail = (problems: string[]): never => {
    throw new UsageError(`invalid inventory ${source}:\n${problems.map((p) => `  ${p}`).join("\n")}`, {
      hint: "see docs/DEPLOY.md (Inventory) for every field",
    });
  };
  // an empty file (or one of comments only) is YAML's null: say so, not "(the node): expected object"
  if (raw === null || raw === undefined)
    fail(["the file is empty: expected `nodes:` with a list of nodes (and optionally `defaults:`)"]);
  const top = inventorySchema.safeParse(raw);
  if (!top.success) fail(describeIssues(top.error.issues, ""));
  const { defaults = {}, nodes: rawNodes } = top.data!;
  const home = opts.home ?? homedir();
  const baseDir = opts.baseDir ?? process.cwd();
  const problems: string[] = [];
  const nodes: InventoryNode[] = [];
  rawNodes.forEach((rawNode, index) => {
    const idGuess =
      rawNode && typeof rawNode === "object" && typeof (rawNode as { id?: unknown }).id === "string"
        ? (rawNode as { id: string }).id
        : undefined;
    const where = idGuess ? `node ${JSON.stringify(idGuess)} (nodes[${index}]).` : `nodes[${index}].`;
    const parsed = nodeSchema.safeParse(rawNode);
    if (!parsed.success) {
      problems.push(...describeIssues(parsed.error.issues, where));
      return;
    }
    const n = parsed.data;
    const zone = n.zone ?? defaults.zone;
    const user = n.user ?? defaults.user;
    const keyFile = n.keyFile ?? defaults.keyFile;
    if (!zone) problems.push(`${where}zone: required (in the node or in defaults)`);
    else if (opts.zones && !opts.zones.includes(zone)) {
      problems.push(
        `${where}zone: ${JSON.stringify(zone)} is not one of the configured zones (${opts.zones.join(", ")})`,
      );
    }
    if (!user) problems.push(`${where}user: required (in the node or in defaults)`);
    if (!keyFile && opts.haveAgent === false) {
      problems.push(`${where}keyFile: required when no SSH agent is running (SSH_AUTH_SOCK is not set)`);
    }
    const agentPort = n.agentPort ?? defaults.agentPort ?? DEFAULT_AGENT_PORT;
    const hostForAddress = n.host.includes(":") ? `[${n.host}]` : n.host;
    const listen = n.listen ?? `0.0.0.0:${agentPort}`;
    nodes.push({
      id: n.id,
      host: n.host,
      port: n.port ?? defaults.port ?? 22,
      user: user ?? "",
      keyFile: keyFile ? expandHome(keyFile, home, baseDir) : undefined,
      zone: zone ?? "",
      capacity: (n.capacity ?? defaults.capacity ?? { shards: 64 }) as Capacity,
      dataDir: n.dataDir ?? defaults.dataDir ?? DEFAULT_DATA_DIR,
      hostKey: n.hostKey,
      agentPort,
      listen,
      // the port the agent listens on: a `listen` with its own port must not advertise agentPort
      advertise: n.advertise ?? `${hostForAddress}:${portOf(listen)}`,
      ...((n.consulAddr ?? defaults.consulAddr) ? { consulAddr: n.consulAddr ?? defaults.consulAddr } : {}),
    });
  });
  const seen = new Map<string, number>();
  const places = new Map<string, string>();
  const adverts = new Map<string, string>();
  nodes.forEach((n, i) => {
    if (seen.has(n.id))
      problems.push(`node ${JSON.stringify(n.id)} (nodes[${i}]).id: also used by nodes[${seen.get(n.id)}]`);
    else seen.set(n.id, i);
    const place = `${n.host.toLowerCase()}:${n.port}:${n.dataDir}`;
    if (places.has(place)) {
      problems.push(
        `node ${JSON.stringify(n.id)} (nodes[${i}]).dataDir: ${n.dataDir} on ${n.host} is also used by node ${places.get(place)}`,
      );
    } else places.set(place, n.id);
    const advert = n.advertise.toLowerCase(); // host names are case-insensitive
    if (adverts.has(advert)) {
      problems.push(
        `node ${JSON.stringify(n.id)} (nodes[${i}]).advertise: ${n.advertise} is also the address of node ${adverts.get(advert)}`,
      );
    } else adverts.set(advert, n.id);
  });
  if (problems.length) fail(problems);
  return { source, nodes };
}

/** An inventory is a few lines per node: reading stops past this (--inventory /dev/zero must not fill memory). */
export const MAX_INVENTORY_BYTES = 1024 * 1024;

export function loadInventory(file: string, opts: ParseInventoryOptions = {}): Inventory {
  const path = resolve(file);
  let text: string;
  try {
    text = readInputText(path, "the inventory", MAX_INVENTORY_BYTES, {
      tooLarge: () =>
        new UsageError(
          `the inventory ${path} is larger than 1 MiB, far more than an inventory holds (a device, or another file?)`,
        ),
    });
  } catch (err) {
    // readInputText's message names the file; the hint says where an inventory comes from
    if (!(err instanceof UsageError)) throw err;
    throw new UsageError(err.message, {
      hint: "pass the inventory with --inventory FILE (default: ./inventory.yaml)",
      cause: err,
    });
  }
  return parseInventory(text, path, { baseDir: resolve(path, ".."), ...opts });
}

/** The most of a private key file that is read: far above any key (a few KiB). */
export const MAX_KEY_FILE_BYTES = 1024 * 1024;

/**
 * The nodes named by --nodes a,b (all when undefined; `given` names what named them in messages);
 * an unknown name is a usage error, and so is a key file that is a directory or a device (such as
 * /dev/zero), before anything is locked or touched. (A missing or unusable one fails that node's
 * connect, as an unreachable host does; connect reads a key file no further than MAX_KEY_FILE_BYTES.)
 */
export function selectNodes(
  inv: Inventory,
  names: string[] | undefined,
  given = "--nodes names",
): InventoryNode[] {
  let nodes = inv.nodes;
  if (names && names.length > 0) {
    const byId = new Map(inv.nodes.map((n) => [n.id, n]));
    const unknown = names.filter((n) => !byId.has(n));
    if (unknown.length) {
      throw new UsageError(
        `${given} ${unknown.map((u) => JSON.stringify(u)).join(", ")}, not in the inventory ${inv.source}`,
        {
          hint: `the inventory has: ${inv.nodes.map((n) => n.id).join(", ")}`,
        },
      );
    }
    nodes = [...new Set(names)].map((n) => byId.get(n)!);
  }
  for (const keyFile of new Set(nodes.map((n) => n.keyFile))) {
    if (keyFile) checkKeyFile(keyFile);
  }
  return nodes;
}

function checkKeyFile(keyFile: string): void {
  let st;
  try {
    st = statSync(keyFile);
  } catch {
    return; // missing: that node's connect says so
  }
  if (!st.isFile())
    throw new UsageError(
      `the private key file (keyFile) ${keyFile} is ${st.isDirectory() ? "a directory" : "not a regular file"}`,
      { hint: "give the path of the private key file in the inventory's keyFile" },
    );
  if (st.size > MAX_KEY_FILE_BYTES)
    throw new UsageError(
      `the private key file (keyFile) ${keyFile} is larger than any key (${st.size} bytes)`,
      {
        hint: "give the path of the private key file in the inventory's keyFile",
      },
    );
}

/** Any C0 control character (newline, tab, NUL, ...) or DEL. */
function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}
