/**
 * The Node.js (V8) flags every agent is started with, by `up --local`, by
 * `deploy`'s launcher script and by the agent benchmark.
 *
 * A small young generation. Whatever is alive when a young-generation
 * collection runs (the requests in flight, and the first entry of each key
 * written) is copied, and each collection stops every request in flight for
 * as long as that takes. With V8's default (up to 16 MiB a semi-space) that
 * was a pause of 1.5–3 ms every 30–45 ms at 50,000 puts/s, which was the
 * agent's p99; with 2 MiB the pauses are much shorter and more frequent, the
 * mean is unchanged and the p99 about 40% lower (docs/AGENT.md, "Young
 * generation"; measured again after state entries were updated in place:
 * 8 MiB still worse). V8 reads the flag only when the process starts: the
 * agent cannot set it itself.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=2"];
