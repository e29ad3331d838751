/**
 * Where each panel goes for a terminal of a given size. Every panel gets a
 * fixed box, so a refresh never changes the frame's size (Ink then redraws
 * only what changed, without flicker).
 *
 *   title                                             (1)
 *   heatmap + legend        │ forecast / plan          (main)
 *   nodes                   │ migrations               (bottom)
 *   status / prompt                                    (1)
 *   help                                              (1)
 */
export interface FrameLayout {
  width: number;
  height: number;
  mainHeight: number;
  leftWidth: number;
  rightWidth: number;
  bottomHeight: number;
  /** Heatmap rows (after its header, the drill-in header and the legend). */
  heatRows: number;
}

export const MIN_WIDTH = 60;
export const MIN_HEIGHT = 16;
/** Lines the heatmap panel spends on other things than rows: header, 2 legend lines. */
const HEAT_CHROME = 3;
/** Extra lines when drilled into a shard: the shard's own header. */
export const DRILL_HEADER = 1;

export function layoutFor(width: number, height: number, nodeCount: number, drilled: boolean): FrameLayout {
  const w = Math.max(MIN_WIDTH, Math.floor(width));
  const h = Math.max(MIN_HEIGHT, Math.floor(height));
  const bottomHeight = Math.max(4, Math.min(nodeCount + 2, Math.floor(h / 3)));
  const mainHeight = h - 1 - bottomHeight - 2;
  const leftWidth = Math.floor(w * 0.6);
  const rightWidth = w - leftWidth - 1;
  const heatRows = Math.max(1, mainHeight - HEAT_CHROME - (drilled ? DRILL_HEADER : 0));
  return { width: w, height: h, mainHeight, leftWidth, rightWidth, bottomHeight, heatRows };
}
