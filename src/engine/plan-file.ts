/**
 * Plan files: a plan as JSON with a checksum, so that a tampered or
 * truncated file is refused when read rather than applied. The checksum is
 * FNV-1a 64 (hash.ts fnv1a64Bytes) over the canonical JSON of the plan
 * (object keys sorted, no whitespace), so re-indenting the file does not
 * break it but changing any value does. Pure: the caller reads and writes
 * the bytes.
 */
import { UsageError } from "../errors.js";
import { canonicalJson } from "./canonical-json.js";
import { fnv1a64Bytes } from "./hash.js";
import { SHARD_ID_PATTERN } from "./location-map.js";
import { PLAN_FORMAT, type MigrationPlan } from "./planner.js";

export { canonicalJson };

export const PLAN_FILE_FORMAT = "shardctl-plan-file/1";

export interface PlanFile {
  format: typeof PLAN_FILE_FORMAT;
  checksum: string;
  plan: MigrationPlan;
}

export function planChecksum(plan: MigrationPlan): string {
  return fnv1a64Bytes(new TextEncoder().encode(canonicalJson(plan)));
}

/** The file's text: pretty JSON of { format, checksum, plan }. */
export function serialisePlanFile(plan: MigrationPlan): string {
  // Round-trip through the canonical form so the stored plan is exactly what was summed.
  const canonical = JSON.parse(canonicalJson(plan)) as MigrationPlan;
  const file: PlanFile = { format: PLAN_FILE_FORMAT, checksum: planChecksum(canonical), plan: canonical };
  return JSON.stringify(file, null, 2) + "\n";
}

/** A string from a file, quoted, and cut short when long (a message must not echo 100 KB). */
function shown(v: string): string {
  return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
}

/** A plan step as read from a file, before it is known to be whole. */
interface LooseStep {
  kind?: unknown;
  shard?: unknown;
  source?: unknown;
  target?: unknown;
  newShard?: unknown;
  node?: unknown;
  segment?: unknown;
  bytes?: unknown;
  diff?: { ops?: unknown } | null;
}

/**
 * Parses and verifies a plan file's text; anything but an intact plan file is a UsageError. `outcome`
 * ends its message ("nothing was applied" by default; "" for a check that applies nothing anyway).
 */
export function parsePlanFile(
  text: string,
  source = "the plan file",
  outcome = "nothing was applied",
): MigrationPlan {
  const refuse = (why: string): never => {
    throw new UsageError(`${source} is refused: ${why}${outcome ? `; ${outcome}` : ""}`, {
      hint: "re-create it with `shardctl plan --all --out FILE`; never edit a plan by hand",
    });
  };
  let value: unknown;
  try {
    // a byte order mark (an editor's or a tool's) is not part of the JSON
    value = JSON.parse(text.startsWith("\ufeff") ? text.slice(1) : text);
  } catch {
    return refuse("it is not complete JSON (truncated or corrupt)");
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) return refuse("it is not a plan file");
  const file = value as Partial<PlanFile>;
  if (file.format !== PLAN_FILE_FORMAT) return refuse(`unknown format ${JSON.stringify(file.format)}`);
  if (file.checksum === undefined) return refuse("the checksum is missing");
  if (typeof file.checksum !== "string" || !/^[0-9a-fA-F]{16}$/.test(file.checksum))
    return refuse(`the checksum ${JSON.stringify(file.checksum)} is not 16 hexadecimal digits`);
  if (!file.plan || typeof file.plan !== "object") return refuse("it holds no plan");
  let sum: string;
  try {
    sum = planChecksum(file.plan);
  } catch {
    return refuse("the plan holds values that cannot be checksummed");
  }
  if (sum !== file.checksum.toLowerCase())
    return refuse("the checksum does not match (the plan was altered or damaged)");
  const plan = file.plan;
  if (plan.format !== PLAN_FORMAT) return refuse(`unknown plan format ${JSON.stringify(plan.format)}`);
  if (!Number.isInteger(plan.mapVersion) || plan.mapVersion < 0) return refuse("the plan has no map version");
  // (absent in plans written before it was recorded: their map version alone is checked)
  const digest: unknown = plan.mapDigest;
  if (digest !== undefined && (typeof digest !== "string" || !/^[0-9a-f]{16}$/.test(digest)))
    return refuse(`the plan's map digest ${JSON.stringify(digest)} is not 16 lowercase hexadecimal digits`);
  if (!Array.isArray(plan.steps) || !Array.isArray(plan.assessments)) return refuse("the plan has no steps");
  // the checksum catches damage, not a hand edit that recomputed it: every step must be whole
  (plan.steps as unknown as (LooseStep | null)[]).forEach((s, i) => {
    const at = `step ${i + 1}`;
    if (!s || typeof s !== "object" || typeof s.shard !== "string") return refuse(`${at} is malformed`);
    if (!SHARD_ID_PATTERN.test(s.shard))
      return refuse(`${at} names ${shown(s.shard)}, which is not a shard id`);
    if (s.kind === "move") {
      if (typeof s.source !== "string" || typeof s.target !== "string")
        return refuse(`${at} moves ${s.shard} without a source and a target`);
      if (typeof s.bytes !== "number" || !Number.isSafeInteger(s.bytes) || s.bytes < 0)
        return refuse(`${at} moves ${s.shard} with a size that is not a number of bytes`);
    } else if (s.kind === "split") {
      if (typeof s.newShard !== "string" || typeof s.node !== "string" || !Number.isInteger(s.segment))
        return refuse(`${at} splits ${s.shard} without its new shard, node or segment`);
      const ops = s.diff && typeof s.diff === "object" ? s.diff.ops : undefined;
      if (!Array.isArray(ops) || (ops[0] as { kind?: unknown } | undefined)?.kind !== "split")
        return refuse(`${at} splits ${s.shard} without its layout change`);
    } else return refuse(`${at} is neither a move nor a split`);
  });
  return plan;
}
