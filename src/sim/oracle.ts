/**
 * The oracle policy: knows the whole trace, and per active segment finds the
 * exact optimum over node schedules by dynamic programming (src/sim/simulate.ts
 * says why its mean is a true lower bound for every other policy).
 *
 * A schedule places the segment on one node per interval, starting on its
 * initial node, and may change node at a boundary only `minSpacing` intervals
 * or more after its previous change (the cooldown every planner-driven policy
 * obeys; 0 for none). With P_n(j) the latency of intervals [0, j) spent on
 * node n, and F(j, m) the least latency of intervals [0, j) for a schedule
 * whose latest change puts the segment on m at boundary j (the change's pause
 * cost included):
 *
 *   F(j, m) = min over n ≠ m and j' ≤ j − minSpacing (or the start, on the
 *             initial node, with no spacing) of F(j', n) + P_n(j) − P_n(j')
 *             + pause(j, n → m)
 *
 * The inner minimum over j' is kept as a running minimum per node, so a
 * segment costs O(intervals × nodes²) time and O(intervals × nodes) memory,
 * whatever the spacing; nodes with the same round trips count as one (below).
 */
import { Replay, type Workload } from "./workload.js";

/**
 * The oracle: per active segment, the exact optimum over node schedules whose changes are at
 * least `minSpacing` intervals apart (see the module comment).
 */
export function runOracle(
  w: Workload,
  initialNodeOfSeg: Int32Array,
  minSpacing = 0,
  onPlacement?: (j: number, nodeOfSeg: Int32Array) => void,
): Replay {
  const { N, Z, nI, rtt, trace } = w;
  const replay = new Replay(w);
  const A = w.active.length;
  const L = Math.max(0, Math.floor(minSpacing));
  // Writes in each fenced tail, per (segment, boundary): [zone, wait ms] pairs.
  const pauseWrites = new Map<number, number[]>();
  const pauseMs = w.opts.writePauseMs;
  if (pauseMs > 0) {
    for (let j = 0; j < nI; j++) {
      const end = w.boundary(j + 1);
      for (let e = w.eventStart[j + 1] - 1; e >= w.eventStart[j] && trace.t[e] >= end - pauseMs; e--) {
        if (!trace.write[e]) continue;
        const key = w.activeIdx[w.segOfEvent[e]] * (nI + 1) + (j + 1);
        let list = pauseWrites.get(key);
        if (!list) pauseWrites.set(key, (list = []));
        list.push(trace.zone[e], end - trace.t[e]);
      }
    }
  }
  const START = -1;
  // Nodes whose round trips from every zone are the same are interchangeable here (the latency and
  // a change's pause cost depend on the round trips alone, and a change between two of them only
  // costs): the schedule is optimised over one node per such class (the segment's own node for its
  // class), exactly, in O(intervals × classes²) per segment.
  const classOf = new Int32Array(N);
  const firstOfClass: number[] = [];
  for (let n = 0; n < N; n++) {
    let c = firstOfClass.findIndex((f) => {
      for (let z = 0; z < Z; z++) if (rtt[z * N + f] !== rtt[z * N + n]) return false;
      return true;
    });
    if (c < 0) c = firstOfClass.push(n) - 1;
    classOf[n] = c;
  }
  const K = firstOfClass.length;
  const cand = new Int32Array(K);
  // schedule[a·nI + j] = node of active segment a in interval j
  const schedule = new Int32Array(A * nI);
  // prefix[j·N + n] = P_n(j)
  const prefix = new Float64Array((nI + 1) * N);
  // F(j, m) and where its schedule was before: the node and the boundary of the change before (START: none)
  const F = new Float64Array((nI + 1) * N);
  const prevNode = new Int32Array((nI + 1) * N);
  const prevAt = new Int32Array((nI + 1) * N);
  // running minimum over the admissible earlier changes onto n of F(j', n) − P_n(j'), and its j'
  const G = new Float64Array(N);
  const GAt = new Int32Array(N);
  // the same over every earlier change (for the final stretch, which needs no spacing)
  const E = new Float64Array(N);
  const EAt = new Int32Array(N);
  for (let a = 0; a < A; a++) {
    // below, n and m index the candidates: cand[n] is the node
    const initNode = initialNodeOfSeg[w.active[a]];
    cand.set(firstOfClass);
    const init = classOf[initNode];
    cand[init] = initNode;
    for (let j = 0; j < nI; j++) {
      for (let n = 0; n < K; n++) {
        let c = 0;
        for (let z = 0; z < Z; z++) c += w.counts[(a * Z + z) * nI + j] * rtt[z * N + cand[n]];
        prefix[(j + 1) * N + n] = prefix[j * N + n] + c;
      }
    }
    G.fill(Infinity);
    E.fill(Infinity);
    G[init] = 0;
    GAt[init] = START;
    E[init] = 0;
    EAt[init] = START;
    F.fill(Infinity, 0, N);
    for (let j = 1; j < nI; j++) {
      // changes at boundary j − L become admissible predecessors of a change at j
      const jp = j - L;
      if (L > 0 && jp >= 1) {
        for (let n = 0; n < K; n++) {
          const v = F[jp * N + n] - prefix[jp * N + n];
          if (v < G[n]) {
            G[n] = v;
            GAt[n] = jp;
          }
        }
      }
      const pw = pauseWrites.get(a * (nI + 1) + j);
      for (let m = 0; m < K; m++) {
        let best = Infinity;
        let arg = -1;
        for (let n = 0; n < K; n++) {
          if (n === m || G[n] === Infinity) continue;
          let trans = 0;
          if (pw)
            for (let i = 0; i < pw.length; i += 2)
              trans += pw[i + 1] + rtt[pw[i] * N + cand[m]] - rtt[pw[i] * N + cand[n]];
          const v = G[n] + prefix[j * N + n] + trans;
          if (v < best) {
            best = v;
            arg = n;
          }
        }
        F[j * N + m] = best;
        prevNode[j * N + m] = arg;
        prevAt[j * N + m] = arg < 0 ? START : GAt[arg];
      }
      // with no spacing, a change at j is at once a predecessor of the change at j + 1
      if (L === 0) {
        for (let n = 0; n < K; n++) {
          const v = F[j * N + n] - prefix[j * N + n];
          if (v < G[n]) {
            G[n] = v;
            GAt[n] = j;
          }
        }
      }
      for (let n = 0; n < K; n++) {
        const v = F[j * N + n] - prefix[j * N + n];
        if (v < E[n]) {
          E[n] = v;
          EAt[n] = j;
        }
      }
    }
    // the last stretch: from the latest change (or the start) to the end; ties keep the earlier schedule
    let bestN = init;
    let bestV = E[init] + prefix[nI * N + init];
    for (let n = 0; n < K; n++) {
      const v = E[n] + prefix[nI * N + n];
      if (v < bestV) {
        bestV = v;
        bestN = n;
      }
    }
    // walk the changes back: node n from boundary `at` to `end`
    let n = bestN;
    let at = EAt[bestN];
    let end = nI;
    while (at !== START) {
      schedule.fill(cand[n], a * nI + at, a * nI + end);
      const pn = prevNode[at * N + n];
      const pa = prevAt[at * N + n];
      end = at;
      n = pn;
      at = pa;
    }
    schedule.fill(cand[n], a * nI, a * nI + end);
  }
  // Replay the schedule through the same accounting as every other policy.
  const cur = Int32Array.from(initialNodeOfSeg);
  const next = new Int32Array(cur.length);
  for (let j = 0; j < nI; j++) {
    next.set(cur);
    if (j + 1 < nI) {
      for (let a = 0; a < A; a++) {
        const s = w.active[a];
        const m = schedule[a * nI + j + 1];
        if (m !== cur[s]) {
          next[s] = m;
          replay.migrations++;
          replay.bytes += w.segBytes[s];
        }
      }
    }
    onPlacement?.(j, cur);
    replay.interval(j, cur, next);
    cur.set(next);
  }
  return replay;
}
