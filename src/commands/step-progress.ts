/**
 * Progress of long synchronous work (a backtest, a replay) on stderr, so that
 * a run of minutes does not look hung; stdout and --json output are not
 * touched. Work that ends quickly shows nothing:
 *
 * - on a terminal, one line redrawn in place (at most every TTY_EVERY_MS,
 *   from TTY_AFTER_MS on) and erased when the work ends;
 * - otherwise (a pipe, a file, CI logs), a plain line every PLAIN_EVERY_MS,
 *   from PLAIN_AFTER_MS on.
 */
import type { Writable } from "node:stream";
import { isTty } from "./migrate-progress.js";

export const TTY_AFTER_MS = 300;
export const TTY_EVERY_MS = 100;
export const PLAIN_AFTER_MS = 2000;
export const PLAIN_EVERY_MS = 5000;

export class StepProgress {
  private started?: number;
  private last = -Infinity;
  private drawn = false;

  constructor(
    private readonly err: Writable,
    private readonly label: string,
    private readonly tty = isTty(err),
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** `done` of `total` units of work; `detail` says what is being done. The first call starts the clock. */
  update(done: number, total: number, detail: string): void {
    const t = this.now();
    this.started ??= t;
    const after = this.tty ? TTY_AFTER_MS : PLAIN_AFTER_MS;
    const every = this.tty ? TTY_EVERY_MS : PLAIN_EVERY_MS;
    if (t - this.started < after || t - this.last < every) return;
    this.last = t;
    const pct = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 0;
    const text = `${this.label}: ${pct}% (${detail})`;
    if (this.tty) {
      this.err.write(`\r\x1b[2K${text}`);
      this.drawn = true;
    } else this.err.write(`${text}\n`);
  }

  /** Erases the terminal line (call when the work ends, also when it fails). */
  end(): void {
    if (this.drawn) this.err.write("\r\x1b[2K");
    this.drawn = false;
  }
}
