/**
 * The oracle policy: knows the whole trace, and per active segment finds the
 * exact optimum over node schedules by dynamic programming (src/sim/simulate.ts
 * says why its mean is a true lower bound for every other policy).
 */
import { Replay, type Workload } from "./workload.js";

/** The oracle: per active segment, the exact optimum over node schedules (see the module comment). */
export function runOracle(w: Workload, initialNodeOfSeg: Int32Array): Replay {
  const { N, Z, nI, rtt, trace } = w;
  const replay = new Replay(w);
  const A = w.active.length;
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
  // schedule[a·nI + j] = node of active segment a in interval j
  const schedule = new Int32Array(A * nI);
  const dp = new Float64Array(N);
  const nextDp = new Float64Array(N);
  const from = new Int32Array(nI * N);
  const cost = new Float64Array(N);
  for (let a = 0; a < A; a++) {
    const init = initialNodeOfSeg[w.active[a]];
    const intervalCost = (j: number) => {
      cost.fill(0);
      for (let z = 0; z < Z; z++) {
        const c = w.counts[(a * Z + z) * nI + j];
        if (c === 0) continue;
        for (let n = 0; n < N; n++) cost[n] += c * rtt[z * N + n];
      }
    };
    intervalCost(0);
    for (let n = 0; n < N; n++) dp[n] = n === init ? cost[n] : Infinity;
    for (let j = 1; j < nI; j++) {
      intervalCost(j);
      const pw = pauseWrites.get(a * (nI + 1) + j);
      for (let m = 0; m < N; m++) {
        // staying is considered first, so ties keep the segment where it is
        let best = dp[m];
        let arg = m;
        for (let n = 0; n < N; n++) {
          if (n === m || dp[n] === Infinity) continue;
          let trans = 0;
          if (pw)
            for (let i = 0; i < pw.length; i += 2)
              trans += pw[i + 1] + rtt[pw[i] * N + m] - rtt[pw[i] * N + n];
          const v = dp[n] + trans;
          if (v < best) {
            best = v;
            arg = n;
          }
        }
        nextDp[m] = best + cost[m];
        from[j * N + m] = arg;
      }
      dp.set(nextDp);
    }
    let bestN = 0;
    for (let n = 1; n < N; n++) if (dp[n] < dp[bestN]) bestN = n;
    for (let j = nI - 1; j >= 0; j--) {
      schedule[a * nI + j] = bestN;
      if (j > 0) bestN = from[j * N + bestN];
    }
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
    replay.interval(j, cur, next);
    cur.set(next);
  }
  return replay;
}
