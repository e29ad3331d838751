/**
 * The autopilot's memory of failed moves and layout changes (the back-off of
 * autopilot-migrate.ts), kept in the store beside the map: the embedded
 * store's `autopilot-memory.json`, Consul's `<prefix>autopilot-memory`. Each
 * cycle starts from what the store holds and saves what changed, so a move
 * that keeps failing is not tried again at once by a restarted autopilot, by
 * the next `autopilot --once` (run from cron, say), or by the standby that
 * takes over as leader.
 *
 * The memory is advice, not data: a store that cannot be read or written, or
 * holds something unreadable, costs at most an early retry. That is logged,
 * the cycle goes on with what the process remembers, and an unreadable record
 * is replaced by the next save. Entries are checked one by one
 * (parseBackoffEntries): a bad one is dropped, never half taken. The saved
 * text is bounded (the newest 1,000 entries of each kind, errors cut to 200
 * characters), well within one Consul value.
 */
import { BACKOFF_MEMORY_FORMAT, parseBackoffEntries, type MoveBackoffEntry } from "../engine/move-backoff.js";
import type { LocationStore } from "../engine/ports.js";
import { errorMessage } from "../errors.js";
import type { MoveBackoffs } from "./autopilot-migrate.js";

const MAX_SAVED = 1000;
const MAX_SAVED_ERROR = 200;

interface MemoryRecord {
  format: typeof BACKOFF_MEMORY_FORMAT;
  savedAt: number;
  moves: MoveBackoffEntry[];
  layout: MoveBackoffEntry[];
}

/** The moves' and the layout changes' back-offs, and what the store was last seen to hold. */
export class AutopilotMemory {
  private stored?: string;
  /** The store held a record that could not be read: the next keep replaces it, even with nothing. */
  private damaged = false;

  constructor(
    readonly moves: MoveBackoffs,
    readonly layout: MoveBackoffs,
  ) {}

  /** Takes up what the store holds (when it holds anything readable). */
  async recall(store: LocationStore, log: (msg: string) => void): Promise<void> {
    if (!store.loadAutopilotMemory) return;
    let text: string | undefined;
    try {
      text = await store.loadAutopilotMemory();
    } catch (err) {
      log(
        `autopilot: cannot read its memory of failed moves from the store (${errorMessage(err)}); going on with what this process remembers`,
      );
      return;
    }
    if (text === undefined || text === this.stored) return;
    try {
      const r = readMemory(text, this);
      this.moves.replace(r.moves);
      this.layout.replace(r.layout);
      this.stored = text;
      if (r.refused > 0)
        log(
          `autopilot: dropped ${r.refused} unreadable entr${r.refused === 1 ? "y" : "ies"} of its memory of failed moves`,
        );
    } catch (err) {
      log(
        `autopilot: its memory of failed moves in the store is unreadable (${errorMessage(err)}); going on with what this process remembers, and it is rewritten at the end of the cycle`,
      );
      this.stored = undefined;
      this.damaged = true;
    }
  }

  /** Saves the state when it differs from what the store was last seen to hold. */
  async keep(store: LocationStore, log: (msg: string) => void, now = Date.now()): Promise<void> {
    if (!store.saveAutopilotMemory) return;
    const moves = this.moves.entries();
    const layout = this.layout.entries();
    // nothing to remember and nothing stored: nothing to write (an unreadable record is replaced)
    if (this.stored === undefined && !this.damaged && moves.length === 0 && layout.length === 0) return;
    const text = memoryText(moves, layout, now);
    if (sameState(text, this.stored)) return;
    try {
      await store.saveAutopilotMemory(text);
      this.stored = text;
      this.damaged = false;
    } catch (err) {
      log(
        `autopilot: cannot save its memory of failed moves in the store (${errorMessage(err)}); a restarted or new leader may try them again early`,
      );
    }
  }
}

/** The record as saved: the newest entries first, bounded. */
export function memoryText(moves: MoveBackoffEntry[], layout: MoveBackoffEntry[], now: number): string {
  const bound = (entries: MoveBackoffEntry[]) =>
    [...entries]
      .sort((a, b) => b.failedAt - a.failedAt)
      .slice(0, MAX_SAVED)
      .map((e) => ({ ...e, lastError: e.lastError.slice(0, MAX_SAVED_ERROR) }));
  const record: MemoryRecord = {
    format: BACKOFF_MEMORY_FORMAT,
    savedAt: now,
    moves: bound(moves),
    layout: bound(layout),
  };
  return JSON.stringify(record);
}

/** Two saved texts that differ only in when they were saved hold the same state. */
function sameState(a: string, b: string | undefined): boolean {
  if (b === undefined) return false;
  const strip = (t: string) => t.replace(/"savedAt":\d+,/, "");
  return strip(a) === strip(b);
}

/** The entries of a saved record, each under its own back-off policy. Throws on a record that is not one. */
export function readMemory(
  text: string,
  policies: { moves: MoveBackoffs; layout: MoveBackoffs },
): { moves: MoveBackoffEntry[]; layout: MoveBackoffEntry[]; refused: number } {
  let value: Partial<MemoryRecord>;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error("not JSON");
  }
  if (typeof value !== "object" || value === null || value.format !== BACKOFF_MEMORY_FORMAT)
    throw new Error(`not a ${BACKOFF_MEMORY_FORMAT} record`);
  const moves = parseBackoffEntries(value.moves, policies.moves.policy);
  const layout = parseBackoffEntries(value.layout, policies.layout.policy);
  return { moves: moves.entries, layout: layout.entries, refused: moves.refused + layout.refused };
}
