/**
 * A fixed box of pre-rendered lines: exactly `height` lines of exactly `width` columns.
 *
 * Each line is laid out as a blank placeholder of its width and swapped for
 * the real (coloured) text by <Transform> when Ink writes the output. Ink
 * caches the measurement of every distinct string it lays out, forever; the
 * heatmap's lines change on every refresh, so measuring them would grow that
 * cache by the whole frame each second. The placeholder is the same string
 * every time, and layout does not need the content: every line is exactly as
 * wide as the box.
 *
 * Every line goes through safeLine: only the dashboard's own colour escapes
 * reach the terminal, never a control sequence from a name or a message.
 */
import { Box, Text, Transform } from "ink";
import { padAnsi, safeLine } from "../text.js";

export interface LinesProps {
  lines: readonly string[];
  width: number;
  height: number;
}

export function Lines({ lines, width, height }: LinesProps) {
  const placeholder = " ".repeat(Math.max(1, width));
  const shown: string[] = [];
  for (let i = 0; i < height; i++) shown.push(padAnsi(safeLine(lines[i] ?? ""), width));
  return (
    <Box flexDirection="column" width={width} height={height} flexShrink={0}>
      {shown.map((line, i) => (
        <Transform key={i} transform={() => line}>
          <Text wrap="truncate-end">{placeholder}</Text>
        </Transform>
      ))}
    </Box>
  );
}
