/** Small terminal charts for command output (no colours, so they survive pipes). */

const BLOCKS = "▁▂▃▄▅▆▇█";

/** One line of block characters scaled to max (shared across lines when given). */
export function sparkline(values: ArrayLike<number>, max?: number): string {
  let hi = max ?? 0;
  if (max === undefined) for (let i = 0; i < values.length; i++) hi = Math.max(hi, values[i]);
  let out = "";
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!(v > 1e-9) || hi <= 0) out += " ";
    else out += BLOCKS[Math.min(BLOCKS.length - 1, Math.floor((v / hi) * (BLOCKS.length - 1) + 0.5))];
  }
  return out;
}

/** The last `width` points of a series. */
export function tail(values: ArrayLike<number>, width: number): number[] {
  const out: number[] = [];
  for (let i = Math.max(0, values.length - width); i < values.length; i++) out.push(values[i]);
  return out;
}
