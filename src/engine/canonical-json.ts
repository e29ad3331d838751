/**
 * Canonical JSON: object keys sorted at every level, no whitespace. What the
 * plan file's checksum and a location map's digest are taken over, so that
 * the same value always gives the same bytes whatever order its keys were
 * written in. Pure.
 */
import { UsageError } from "../errors.js";

/** JSON with object keys sorted at every level; non-finite numbers are refused (they have no JSON form). */
export function canonicalJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "number":
      if (!Number.isFinite(value)) throw new UsageError(`cannot serialise the non-finite number ${value}`);
      return JSON.stringify(value);
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value))
        return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(",")}]`;
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj)
        .filter((k) => obj[k] !== undefined)
        .sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(",")}}`;
    }
    default:
      throw new UsageError(`cannot serialise a value of type ${typeof value}`);
  }
}
