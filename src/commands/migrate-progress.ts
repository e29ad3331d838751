/**
 * The progress display of `shardctl migrate --apply`, on stderr only (stdout
 * keeps the data, and --json output is not touched):
 *
 * - on a terminal, an ora spinner whose text is the phase, the bytes copied
 *   of the estimated total, the lag in entries and the copy rate, redrawn in
 *   place; the coordinator's status lines are printed above it;
 * - otherwise (a pipe, a file, CI logs), a plain line at most every
 *   PLAIN_EVERY_MS and whenever the phase or step changes.
 */
import type { Writable } from "node:stream";
import ora, { type Ora } from "ora";
import type { CopyProgress } from "../cluster/migrate-copy.js";
import { formatBytes } from "../output.js";

export const PLAIN_EVERY_MS = 1000;
/** The rate is measured over this window (ms). */
const RATE_WINDOW_MS = 2000;

export function isTty(stream: Writable): boolean {
  return (stream as Writable & { isTTY?: boolean }).isTTY === true;
}

export class MigrationProgress {
  private spinner?: Ora;
  private lastPlain = 0;
  private lastKey = "";
  private readonly samples: { t: number; bytes: number }[] = [];

  constructor(
    private readonly err: Writable,
    private readonly shard: string,
    private readonly tty = isTty(err),
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** A status line of the coordinator (journal, fence, commit...): above the spinner, or plain. */
  log(line: string): void {
    // ora intercepts writes to its stream while it spins: the line lands above it
    this.err.write(`${line}\n`);
  }

  update(p: CopyProgress): void {
    const t = this.now();
    this.samples.push({ t, bytes: p.bytes });
    while (this.samples.length > 2 && t - this.samples[0].t > RATE_WINDOW_MS) this.samples.shift();
    const text = this.describe(p);
    if (this.tty) {
      if (!this.spinner) {
        this.spinner = ora({
          stream: this.err as NodeJS.WritableStream,
          isEnabled: true,
          discardStdin: false,
        });
        this.spinner.start(text);
      } else this.spinner.text = text;
      return;
    }
    const key = `${p.phase}/${p.step}`;
    if (key === this.lastKey && t - this.lastPlain < PLAIN_EVERY_MS) return;
    this.lastKey = key;
    this.lastPlain = t;
    this.err.write(`  ${text}\n`);
  }

  /** Bytes per second over the last RATE_WINDOW_MS (undefined until two samples). */
  rate(): number | undefined {
    if (this.samples.length < 2) return undefined;
    const a = this.samples[0];
    const b = this.samples[this.samples.length - 1];
    if (b.t <= a.t) return undefined;
    return ((b.bytes - a.bytes) * 1000) / (b.t - a.t);
  }

  describe(p: CopyProgress): string {
    const phase = p.step === "snapshot" ? `${p.phase} (snapshot)` : p.phase;
    const total = p.bytesTotal && p.bytesTotal >= p.bytes ? p.bytesTotal : undefined;
    const copied = total
      ? `${formatBytes(p.bytes)} of ~${formatBytes(total)} (${Math.floor((p.bytes / total) * 100)}%)`
      : formatBytes(p.bytes);
    const r = this.rate();
    return `${this.shard} ${phase}: ${copied} copied, lag ${p.lag} entries${r === undefined ? "" : `, ${formatBytes(r)}/s`}`;
  }

  /** Removes the spinner (the result is printed after it). */
  stop(): void {
    this.spinner?.stop();
    this.spinner = undefined;
  }
}
