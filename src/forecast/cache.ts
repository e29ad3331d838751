/**
 * Remembers each series' model choice so that selection (the expensive part)
 * runs once per series and again only after the series has grown enough that
 * the answer could have changed.
 */
import type { ModelChoice } from "./select.js";

export interface CacheOptions {
  /** Re-select after the series grows by more than this fraction (default 0.1). */
  maxGrowthFraction?: number;
  /** ... or by more than this many points (default 288: a day of 5-minute data). */
  maxGrowthPoints?: number;
}

interface Entry {
  choice: ModelChoice;
  length: number;
}

export class ModelSelectionCache {
  private readonly entries = new Map<string, Entry>();
  private readonly fraction: number;
  private readonly points: number;

  constructor(opts: CacheOptions = {}) {
    this.fraction = opts.maxGrowthFraction ?? 0.1;
    this.points = opts.maxGrowthPoints ?? 288;
  }

  /** The cached choice, unless the series has grown (or shrunk) past the revisit thresholds. */
  get(seriesId: string, length: number): ModelChoice | undefined {
    const e = this.entries.get(seriesId);
    if (!e) return undefined;
    const growth = length - e.length;
    if (growth < 0 || growth > this.points || growth > this.fraction * e.length) return undefined;
    return e.choice;
  }

  set(seriesId: string, length: number, choice: ModelChoice): void {
    this.entries.set(seriesId, { choice, length });
  }

  get size(): number {
    return this.entries.size;
  }

  delete(seriesId: string): void {
    this.entries.delete(seriesId);
  }
}
