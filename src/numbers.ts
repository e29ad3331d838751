/** Numbers the user types (flags, environment variables): plain decimal digits only. */
import { UsageError } from "./errors.js";

/**
 * A positive integer written in decimal digits: not `0x10`, `1e3`, `4.096e3`, ` 16` or `16 `,
 * which Number() would all accept. Flags and environment variables share it.
 */
export function parsePositiveInt(value: string, what: string): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
    throw new UsageError(`${what} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return n;
}
