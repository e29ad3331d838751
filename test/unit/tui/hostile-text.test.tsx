/**
 * Names and messages that come from outside (the location map, an agent's
 * answer, the migration journal) must not reach the terminal as control
 * sequences, and wide characters must not make a line wider than its box.
 */
import { describe, expect, it } from "vitest";
import { fit } from "../../../src/tui/format.js";
import { renderFrame } from "../../../src/tui/once.js";
import { makeSnapshot, nodeView } from "./fixtures.js";

/** Terminal columns of a plain string: CJK ideographs and fullwidth forms take two. */
function columns(s: string): number {
  let n = 0;
  for (const ch of s) n += /[\p{Script=Han}\p{Script=Hiragana}\uFF01-\uFF60]/u.test(ch) ? 2 : 1;
  return n;
}

/** What is left of a line once the dashboard's own colours (SGR) are taken out. */
// eslint-disable-next-line no-control-regex
const withoutSgr = (line: string) => line.replace(/\x1b\[[0-9;]*m/g, "");
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

const HOSTILE = "a\x1b]0;owned\x07\x1b[2J\x1b[H\x9b31m\x1b[8m";
const WIDE = "東京東京東京東京";

function hostileSnapshot() {
  const snap = makeSnapshot({ segments: 64, shards: 4, rates: { 5: [80, 10] } });
  snap.nodes = [
    nodeView("node-1", HOSTILE, { address: `127.0.0.1:1\x1b]52;c;ZWNobyBoaQ==\x07` }),
    nodeView("node-2", WIDE),
    nodeView("node-3", "c", {
      health: "unreachable",
      problem: `answered 500: ${WIDE}\x1b[31m`,
      accessRate: 0,
    }),
  ];
  snap.warnings = [`node node-3 (${HOSTILE}) is UNREACHABLE: ${WIDE}\x07`];
  snap.migrations.recent[0] = {
    ...snap.migrations.recent[0],
    result: "aborted",
    reason: `\x1b[8m${WIDE}`,
  };
  snap.migrations.inFlight[0] = {
    ...snap.migrations.inFlight[0],
    problem: `roll-forward pending: ${HOSTILE}`,
  };
  return snap;
}

describe("hostile names and messages", () => {
  for (const [colour, width] of [
    [false, 120],
    [true, 120],
    [false, 200],
  ] as const) {
    it(`never writes control characters and keeps every line in its width (colour ${colour}, ${width} columns)`, () => {
      const opts = { width, height: 30, colour, hotRate: 50, view: "segments" as const };
      // the overview, and drilled into shard-1 (its header names node-1's zone)
      for (const nav of [{}, { drilled: "shard-1" }]) {
        const frame = renderFrame(hostileSnapshot(), opts, undefined, nav);
        const lines = frame.split("\n");
        expect(lines.length).toBeLessThanOrEqual(30);
        for (const line of lines) {
          const text = withoutSgr(line);
          expect(text, JSON.stringify(line)).not.toMatch(CONTROL);
          expect(columns(text), JSON.stringify(text)).toBeLessThanOrEqual(width);
        }
        // without colour the dashboard writes no escape at all: not even a name's own SGR gets through
        if (!colour) expect(lines.join(""), frame).not.toMatch(CONTROL);
      }
      const frame = renderFrame(hostileSnapshot(), opts);
      // the names are still shown, as text
      expect(frame).toContain("東京");
      expect(frame).toMatch(/a\?\]0;owned/);
    });
  }

  it("fits wide characters by columns, not by code points", () => {
    expect(fit(WIDE, 6)).toBe("東京… ");
    expect(columns(fit(WIDE, 7))).toBe(7);
    expect(fit("東京", 4)).toBe("東京");
    expect(fit("東京", 6, "right")).toBe("  東京");
    expect(fit("ab\x1b[2Jc", 10)).toBe("ab?[2Jc   ");
    // bidirectional overrides would reorder what the terminal shows: inert too
    expect(fit("ab\u202ecba\u2066x", 10)).toBe("ab?cba?x  ");
  });
});
