/**
 * What an agent answers about one of its shards, said in words for a
 * coordinator's abort message: the hint reports what the agent said, not what
 * the location map says (a map restored from a backup may name an owner that
 * released the shard long ago).
 */
import type { AgentRpc } from "./agent-rpc.js";

/** An agent's answer to GET /v1/shards/:id, or why there is none. */
export type ServingAnswer =
  | {
      status: 200;
      body: {
        state?: string;
        epoch?: number;
        failed?: string;
        redirect?: { node?: string; epoch?: number } | null;
      };
    }
  | { status: number; body?: unknown; error?: string };

/** Asks `node` what it holds of `shardId`; never throws (a transport failure is an answer too). */
export async function askServing(rpc: AgentRpc, address: string, shardId: string): Promise<ServingAnswer> {
  try {
    const r = await rpc.json<Record<string, unknown>>(
      address,
      "GET",
      `/v1/shards/${encodeURIComponent(shardId)}`,
    );
    return { status: r.status, body: r.body } as ServingAnswer;
  } catch (err) {
    return { status: 0, error: (err as Error).message };
  }
}

/**
 * The answer in words. `served` is true when the agent serves the shard
 * (owned, not failed); `mapEpoch` is the map's epoch for it, named when the
 * agent has seen a newer one (the map is behind the agents). Pure.
 */
export function describeServing(
  shardId: string,
  node: string,
  mapEpoch: number,
  a: ServingAnswer,
): { served: boolean; text: string } {
  if (a.status === 200) {
    const b = (a.body ?? {}) as Extract<ServingAnswer, { status: 200 }>["body"];
    const epoch = typeof b.epoch === "number" ? b.epoch : undefined;
    const behind =
      epoch !== undefined && epoch > mapEpoch
        ? `; the location map says epoch ${mapEpoch}: it is older than the agents (a map restored from a backup?) — bring it up to date before re-running`
        : "";
    if (b.state === "owned" && !b.failed)
      return { served: true, text: `${shardId} is still served by ${node} at epoch ${epoch ?? "?"}` };
    if (b.failed || b.state === "failed")
      return { served: false, text: `${shardId} is refused on ${node}: ${b.failed ?? "failed"}` };
    const redirect =
      b.redirect && typeof b.redirect.node === "string"
        ? `, redirecting to ${b.redirect.node} at epoch ${b.redirect.epoch ?? "?"}`
        : "";
    return {
      served: false,
      text: `${shardId} is ${b.state ?? "in an unknown state"} at epoch ${epoch ?? "?"} on ${node}${redirect}${behind}`,
    };
  }
  if (a.status === 404) return { served: false, text: `${node} holds no ${shardId}` };
  const why =
    "error" in a && a.error
      ? a.error
      : `it answered ${a.status}${(a.body as { error?: string } | undefined)?.error ? ` ${(a.body as { error: string }).error}` : ""}`;
  return { served: false, text: `could not learn from ${node} what it serves of ${shardId} (${why})` };
}
