/** `shardctl put|get|delete KEY`: one key through the routing client. */
import { fstatSync } from "node:fs";
import type { Readable } from "node:stream";
import type { Command } from "commander";
import { ShardClient, type GetResult } from "../client/shard-client.js";
import { resolveClientToken } from "../cluster/local.js";
import type { Config } from "../config.js";
import { validateKey } from "../engine/segmenter.js";
import { UsageError, UserError } from "../errors.js";
import { printable, printJson, type IO } from "../output.js";
import { checkOutputPath, writeOutputFile } from "../store/embedded.js";
import { openStore } from "../store/index.js";
import { readInputBytes } from "./common.js";
import type { CommandContext, RegisterCommand } from "./context.js";

export interface KvDeps {
  io: IO;
  config: Config;
  stdin?: Readable;
}

function checkZone(config: Config, zone: string | undefined): void {
  if (zone !== undefined && !config.zones.includes(zone)) {
    throw new UsageError(`--zone ${zone} is not one of the configured zones (${config.zones.join(", ")})`);
  }
}

async function withClient<T>(
  deps: KvDeps,
  zone: string | undefined,
  fn: (c: ShardClient) => Promise<T>,
): Promise<T> {
  const config = deps.config;
  checkZone(config, zone);
  const token = resolveClientToken(config);
  const store = await openStore(config);
  const client = new ShardClient({
    store,
    token,
    originZone: zone,
    maxKeyBytes: config.limits.maxKeyBytes,
    maxValueBytes: config.limits.maxValueBytes,
  });
  try {
    return await fn(client);
  } finally {
    client.close();
    await store.close();
  }
}

/**
 * `--write-id HEX`: the id of a write to retry (the client's format: 16 bytes, as 32 hex digits,
 * printed by `--json` and by the error of a write that may have been applied). Checked before
 * anything is read or sent.
 */
export function parseWriteId(text: string | undefined): Buffer | undefined {
  if (text === undefined) return undefined;
  if (!/^[0-9A-Fa-f]{32}$/.test(text)) {
    const shown = text.length > 80 ? `${JSON.stringify(text.slice(0, 80))}…` : JSON.stringify(text);
    throw new UsageError(`--write-id ${shown} is not a write id: it must be 32 hex digits (16 bytes)`, {
      hint:
        "pass the id of the write to retry as printed by `--json` (writeId) or by the error that said it " +
        "may have been applied; leave the option out for a new write",
    });
  }
  return Buffer.from(text, "hex");
}

/** What a write's output adds when an earlier attempt had applied it (its answer was lost). */
const DUPLICATE_NOTE = " (already applied by an earlier attempt; nothing written again)";

/** A value past limits.maxValueBytes, from standard input or a file: reading stopped at the limit + 1. */
function valueTooLarge(from: string, limit: number): UsageError {
  return new UsageError(`the value ${from} is more than ${limit} bytes (limits.maxValueBytes)`);
}

function stdinIsDirectory(): boolean {
  try {
    return fstatSync(0).isDirectory();
  } catch {
    return false;
  }
}

async function readAll(stream: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    const b = typeof c === "string" ? Buffer.from(c) : (c as Buffer);
    n += b.length;
    if (n > limit) throw valueTooLarge("on standard input", limit);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

export async function runPut(
  key: string,
  value: string | undefined,
  opts: { file?: string; zone?: string; json?: boolean; writeId?: string },
  deps: KvDeps,
) {
  if (value !== undefined && opts.file)
    throw new UsageError("give the value either as an argument or with --file, not both");
  // a bad key, zone or write id is refused before the value is read: standard input may be a terminal
  const given = parseWriteId(opts.writeId);
  checkZone(deps.config, opts.zone);
  validateKey(key, deps.config.limits.maxKeyBytes);
  let body: Buffer;
  if (opts.file) {
    // read no further than the limit + 1: --file /dev/zero or an endless pipe is refused, not buffered
    const limit = deps.config.limits.maxValueBytes;
    const file = opts.file;
    body = readInputBytes(file, "the value file", limit, {
      tooLarge: () => valueTooLarge(`in ${file}`, limit),
    });
  } else if (value !== undefined) {
    // arguments are decoded leniently: bytes that are not UTF-8 arrive as U+FFFD, and would be stored so
    if (value.includes("\ufffd")) {
      throw new UsageError(
        "the value argument holds U+FFFD, the replacement character: bytes that are not UTF-8 turn into it when arguments are decoded, so the bytes given cannot be known",
        { hint: "give a binary value (or one holding U+FFFD) with --file, or on standard input" },
      );
    }
    body = Buffer.from(value, "utf8");
  } else {
    // `put KEY < dir`: a directory on standard input reads as an empty value, which would be stored
    if (!deps.stdin && stdinIsDirectory()) {
      throw new UsageError("standard input is a directory, not a value: nothing was stored", {
        hint: "give the value as an argument, with --file FILE, or redirect a file into standard input",
      });
    }
    body = await readAll(deps.stdin ?? process.stdin, deps.config.limits.maxValueBytes);
  }
  if (body.length > deps.config.limits.maxValueBytes) {
    throw new UsageError(
      `the value is ${body.length} bytes; the limit is ${deps.config.limits.maxValueBytes} (limits.maxValueBytes)`,
    );
  }
  // the id is chosen here, not in put, so that --json can print it for a retry
  let writeId = given;
  const r = await withClient(deps, opts.zone, (c) =>
    c.put(key, body, { writeId: (writeId ??= c.newWriteId()) }),
  );
  // duplicate: an attempt whose answer was lost had applied the write, and the retry was answered
  // with its outcome (nothing was applied twice)
  if (opts.json) {
    printJson(deps.io, {
      key,
      lsn: r.lsn,
      bytes: body.length,
      duplicate: r.duplicate === true,
      writeId: writeId!.toString("hex"),
    });
  } else {
    deps.io.err.write(
      `stored ${printable(key)} (${body.length} bytes, lsn ${r.lsn})${r.duplicate ? DUPLICATE_NOTE : ""}\n`,
    );
  }
}

export async function runGet(
  key: string,
  opts: { json?: boolean; out?: string; zone?: string },
  deps: KvDeps,
) {
  // a bad --out path is refused before the cluster is asked (and the access counted)
  if (opts.out) checkOutputPath(opts.out);
  const r = await withClient(deps, opts.zone, (c) => c.get(key));
  if (!r) throw new UserError(`key not found: ${printable(key)}`);
  if (opts.out) {
    writeValueFile(key, r, opts.out, opts.json ?? false, deps.io);
    return;
  }
  if (opts.json) {
    const text = utf8Text(r.value);
    printJson(
      deps.io,
      text !== undefined
        ? { key, value: text, encoding: "utf8", lsn: r.lsn, timestamp: r.timestamp }
        : { key, value: r.value.toString("base64"), encoding: "base64", lsn: r.lsn, timestamp: r.timestamp },
    );
    return;
  }
  deps.io.out.write(r.value);
}

/** The value as text when it is UTF-8, byte for byte (a leading byte-order mark is kept); else undefined. */
function utf8Text(value: Buffer): string | undefined {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(value);
  } catch {
    return undefined;
  }
}

/**
 * `get --out`: the value is written atomically, so a failure leaves neither a partial file
 * nor a temporary one; with --json, what was written is described on stdout.
 */
export function writeValueFile(key: string, r: GetResult, out: string, json: boolean, io: IO): void {
  // 0o666 less the umask, as the plain write this replaces made it: the value is the user's file
  writeOutputFile(out, r.value, { mode: 0o666 });
  if (json) printJson(io, { key, out, bytes: r.value.length, lsn: r.lsn, timestamp: r.timestamp });
  else io.err.write(`wrote ${r.value.length} bytes to ${out}\n`);
}

export async function runDelete(
  key: string,
  opts: { zone?: string; json?: boolean; writeId?: string },
  deps: KvDeps,
) {
  let writeId = parseWriteId(opts.writeId);
  const r = await withClient(deps, opts.zone, (c) =>
    c.delete(key, { writeId: (writeId ??= c.newWriteId()) }),
  );
  if (opts.json) {
    printJson(deps.io, {
      key,
      existed: r.existed,
      lsn: r.lsn,
      duplicate: r.duplicate === true,
      writeId: writeId!.toString("hex"),
    });
  } else {
    const note = r.duplicate ? DUPLICATE_NOTE : "";
    deps.io.err.write(
      r.existed
        ? `deleted ${printable(key)}${note}\n`
        : `${printable(key)} did not exist (nothing to delete)${note}\n`,
    );
  }
}

export const registerKv: RegisterCommand = (program: Command, ctx: CommandContext) => {
  const deps = (): KvDeps => ({ io: ctx.io, config: ctx.config() });
  program
    .command("put")
    .description("store a value under a key (routed to the key's shard owner)")
    .argument("<key>", "the key (UTF-8)")
    .argument("[value]", "the value; else --file, else standard input")
    .option("--file <file>", "read the value from a file (binary safe; at most limits.maxValueBytes)")
    .option("--zone <zone>", "origin zone to report for this access")
    .option("--write-id <hex>", "retry a write with its id (32 hex digits): applied at most once")
    .option("--json", "print {key, lsn, bytes, duplicate, writeId}")
    .addHelpText("after", PUT_HELP)
    .action((key: string, value: string | undefined, opts) => runPut(key, value, opts, deps()));
  program
    .command("get")
    .description("print the value of a key (raw bytes on stdout); exit 1 when it does not exist")
    .argument("<key>", "the key (UTF-8)")
    .option(
      "--json",
      "print {key, value, encoding, lsn, timestamp} (base64 when not UTF-8); with --out, {key, out, bytes, lsn, timestamp}",
    )
    .option(
      "--out <file>",
      "write the value to a file instead of stdout (atomically; a bad path is refused before the cluster is asked)",
    )
    .option("--zone <zone>", "origin zone to report for this access")
    .addHelpText("after", GET_HELP)
    .action((key: string, opts) => runGet(key, opts, deps()));
  program
    .command("delete")
    .description("delete a key")
    .argument("<key>", "the key (UTF-8)")
    .option("--zone <zone>", "origin zone to report for this access")
    .option("--write-id <hex>", "retry a delete with its id (32 hex digits): applied at most once")
    .option("--json", "print {key, existed, lsn, duplicate, writeId}")
    .addHelpText("after", DELETE_HELP)
    .action((key: string, opts) => runDelete(key, opts, deps()));
};

const PUT_HELP = `
The write is acknowledged only after the owner agent's fsync. Every attempt at
it carries one write id, so a retry after a lost answer is not applied twice:
with --json, "duplicate": true says the write had been applied by an earlier
attempt (lsn is that attempt's; the value given again is not stored); false
otherwise. --json prints the write id ("writeId"), and so does the error of a
write that may have been applied: run the command again with --write-id and
that id to retry it safely. A write id names one write: given again for another
key of the same log shard (or for a delete), it is refused (exit 2) and nothing
is written. Ids are remembered per shard, so an id reused for a key on another
shard is not recognised there: give --write-id only to retry a write.

Examples:
  shardctl put user:42 '{"name":"Ada"}'
  shardctl put avatar:42 --file avatar.png
  tar c dir | shardctl put backup:1
  shardctl put --zone b session:9 token123     # count the access for zone b
  shardctl put --write-id 00112233445566778899aabbccddeeff user:42 '{"name":"Ada"}'

Exit codes: 0 stored, 1 the cluster refused or is unreachable (or the write may
have been applied: read the key, or retry with its --write-id), 2 bad key, value
or write id (or one that names another write),
3 no agent serves the key's shard (the agents redirect in a cycle; nothing was
written; see \`shardctl status\` and \`shardctl migrations\`).`;

const GET_HELP = `
Examples:
  shardctl get user:42
  shardctl get avatar:42 --out avatar.png
  shardctl get user:42 --json

Exit codes: 0 found, 1 not found (said on stderr) or the cluster failed, 2 bad key,
3 no agent serves the key's shard (the agents redirect in a cycle).`;

const DELETE_HELP = `
As put, a retry after a lost answer is not applied twice: with --json,
"duplicate": true says an earlier attempt had deleted the key (existed and lsn
are that attempt's); false otherwise. --json and the error of a delete that
may have been applied print its write id: retry with --write-id and that id.

Examples:
  shardctl delete user:42
  shardctl delete user:42 --json

Exit codes: 0 done (whether or not the key existed), 1 the cluster failed (or the
delete may have been applied: retry with its --write-id), 2 bad key or write id, 3 no agent serves the key's shard (the
agents redirect in a cycle; nothing was deleted).`;
