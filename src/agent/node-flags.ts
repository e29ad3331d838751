/**
 * The Node.js (V8) flags every agent is started with, by `up --local`, by
 * `deploy`'s launcher script and by the agent benchmark.
 *
 * A small young generation. Each put replaces its key's state entry and value,
 * so a few hundred bytes a put outlive the next young-generation collection,
 * and each collection stops every request in flight for as long as it takes
 * to copy them. With V8's default (up to 16 MiB a semi-space) that is a pause
 * of 1.5–3 ms every 30–45 ms at 50,000 puts/s, which is the agent's p99; with
 * 2 MiB the pauses are much shorter and more frequent, the mean is unchanged
 * and the p99 about 40% lower (docs/AGENT.md, "Young generation"). V8 reads
 * the flag only when the process starts: the agent cannot set it itself.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=2"];
