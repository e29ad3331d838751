/**
 * `shardctl record`: the spec's update_access_pattern(data_key, access_type),
 * into the access windows file of the embedded default. With --trace, a whole
 * CSV trace (timestamp,key,op[,zone]) is validated first and then recorded,
 * shifted so that its last event lands at the present.
 */
import type { Command } from "commander";
import { parseAccessType, type AccessType } from "../engine/access-windows.js";
import { UsageError, UserError } from "../errors.js";
import { printJson } from "../output.js";
import { splitCsvLine } from "../forecast/csv.js";
import { badTimestampReason, parseTraceTimestamp } from "../sim/trace.js";
import { updateWindows } from "../store/windows-file.js";
import { MAX_TRACE_BYTES, parsePositiveInt, readInputText, segmenterFor, withStore } from "./common.js";
import { servedByAgents } from "../cluster/layout-guard.js";
import type { Config } from "../config.js";
import { openStore } from "../store/index.js";
import type { CommandContext } from "./context.js";

export interface TraceEvent {
  ts: number;
  key: string;
  op: AccessType;
  zone?: string;
  count?: number;
  /** Its line in the trace (1-based), for errors. */
  line?: number;
}

/**
 * Parses a trace as `simulate` reads one (the same field splitting, quoting and timestamps: a trace
 * build-trace wrote records as it replays), except that the zone may be left out and the lines
 * need not be sorted; any bad line is an error naming it, and nothing is recorded.
 */
export function parseTrace(text: string, zones: readonly string[]): TraceEvent[] {
  const lines = text.replace(/^\uFEFF/, "").split(/\r\n?|\n/);
  const events: TraceEvent[] = [];
  const fail = (line: number, why: string): never => {
    throw new UsageError(`trace line ${line}: ${why}`, {
      hint: "each line is timestamp,key,op[,zone]: timestamp ISO-8601 (no zone = UTC) or epoch milliseconds from 2000-01-01, op read or write; a header line is optional",
    });
  };
  let header = false;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    if (raw.trim() === "") continue;
    const f = splitCsvLine(raw) ?? fail(i + 1, "unbalanced quote");
    if (!header && events.length === 0 && f[0].trim().toLowerCase() === "timestamp") {
      const names = f.map((x) => x.trim().toLowerCase()).join(",");
      if (!/^timestamp,key,op(,zone)?$/.test(names))
        fail(i + 1, `the header must be timestamp,key,op[,zone], got ${JSON.stringify(names)}`);
      header = true;
      continue;
    }
    if (f.length < 3 || f.length > 4) fail(i + 1, `expected 3 or 4 fields, got ${f.length}`);
    const ts = parseTraceTimestamp(f[0].trim()) ?? fail(i + 1, badTimestampReason(f[0].trim()));
    let op: AccessType;
    try {
      op = parseAccessType(f[2].trim());
    } catch {
      fail(i + 1, `unknown access type ${JSON.stringify(f[2])} (use read or write)`);
    }
    const zone = f[3]?.trim() || undefined;
    if (zone !== undefined && !zones.includes(zone)) {
      throw new UsageError(`trace line ${i + 1}: unknown zone ${JSON.stringify(zone)}`, {
        hint: `configured zones: ${zones.join(", ")}`,
      });
    }
    events.push({ ts, key: f[1], op: op!, zone, line: i + 1 });
  }
  if (events.length === 0)
    throw new UsageError("the trace has no events", { hint: "each line is timestamp,key,op[,zone]" });
  return events;
}

/** Whether agents serve the stored layout (then the commands read their counts, not the windows file); false if unknown. */
async function agentsServe(config: Config): Promise<boolean> {
  try {
    const vm = await withStore(
      () => openStore(config),
      (store) => store.load(),
    );
    return !!vm && servedByAgents(vm.map);
  } catch {
    return false; // no store to read: the recording stands, nothing to warn about
  }
}

export function registerRecord(program: Command, ctx: CommandContext): void {
  program
    .command("record")
    .description("record accesses to a key in the access windows (update_access_pattern)")
    .argument("[key]", "the data key")
    .option("--op <type>", "access type: read or write", "read")
    .option("--zone <zone>", "origin zone of the access")
    .option("--count <n>", "record this many accesses", "1")
    .option(
      "--trace <file>",
      "record every event of a CSV trace (timestamp,key,op[,zone]; at most 448 MiB), ending now",
    )
    .option("--json", "print what was recorded as JSON", false)
    .addHelpText(
      "after",
      `
The windows live in <dataDir>/access-windows.bin; \`shardctl reshard\` reads them.
Once agents run, they count accesses themselves and this command is for tests and demos:
the commands read the agents' counts, and the file only where no agent answers (it says
so with a warning when agents serve the layout).

A trace is read as \`shardctl simulate\` reads one (quoted fields, timestamps ISO-8601
with no zone taken as UTC or epoch milliseconds from 2000-01-01, a header line optional),
except that the zone may be left out and the lines need not be sorted; the whole trace is
checked before anything is recorded, and its last event is recorded as now.

Examples:
  $ shardctl record user:42 --op write --zone b
  $ shardctl record user:42 --count 5000
  $ shardctl record --trace workload.csv`,
    )
    .action(
      async (
        key: string | undefined,
        o: { op: string; zone?: string; count: string; trace?: string; json: boolean },
        cmd: Command,
      ) => {
        const config = ctx.config();
        const segmenter = segmenterFor(config);
        let events: TraceEvent[];
        if (o.trace) {
          if (key !== undefined) throw new UsageError("give either a key or --trace, not both");
          // a trace says each event's op and zone itself: an option it would silently ignore is refused
          const ignored = ["op", "zone", "count"].filter((n) => cmd.getOptionValueSource(n) === "cli");
          if (ignored.length)
            throw new UsageError(`--${ignored.join(", --")} cannot be given with --trace`, {
              hint: "a trace line is timestamp,key,op[,zone]: put the access type and zone in the trace",
            });
          // bounded like simulate's traces: /dev/zero or a directory is a usage error, not a crash
          events = parseTrace(readInputText(o.trace, "the trace", MAX_TRACE_BYTES), config.zones);
          const last = events.reduce((m, e) => Math.max(m, e.ts), -Infinity);
          const shift = Date.now() - last;
          for (const e of events) e.ts += shift;
        } else {
          if (key === undefined) throw new UsageError("give a key (or --trace FILE)");
          const count = parsePositiveInt(o.count, "--count");
          events = [{ ts: Date.now(), key, op: parseAccessType(o.op), zone: o.zone, count }];
        }
        // Validate every key and zone before touching the file: bad input changes nothing.
        const segments = events.map((e) => {
          try {
            return segmenter.segmentOf(e.key);
          } catch (err) {
            if (e.line === undefined || !(err instanceof UserError)) throw err;
            throw new UsageError(`trace line ${e.line}: ${err.message}`, { hint: err.hint });
          }
        });
        const recorded = await updateWindows(config, (w) => {
          const zoneIdx = events.map((e) => w.zoneIndexOf(e.zone));
          let n = 0;
          events.forEach((e, i) => {
            const count = e.count ?? 1;
            try {
              w.record(segments[i], e.op === "write", zoneIdx[i], e.ts, count);
            } catch (err) {
              if (e.line === undefined || !(err instanceof UserError)) throw err;
              throw new UsageError(`trace line ${e.line}: ${err.message}`, { hint: err.hint });
            }
            n += count;
          });
          return n;
        });
        const summary = { events: recorded, segments: new Set(segments).size };
        if (o.json) printJson(ctx.io, summary);
        else ctx.io.out.write(`recorded ${summary.events} access(es) to ${summary.segments} segment(s)\n`);
        if (await agentsServe(config))
          ctx.io.err.write(
            "warning: agents serve this layout: reshard, predict, plan and the dashboard read the agents' counts, " +
              "so these accesses count only while no agent answers\n",
          );
      },
    );
}
