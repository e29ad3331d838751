/** Registers the agents of a local cluster as Consul services (and removes them again). */
import type { Config } from "../config.js";
import type { NodeInfo } from "../engine/location-map.js";
import { errorMessage } from "../errors.js";
import { openConsulHttp } from "./open.js";
import { deregisterAgentService, registerAgentService } from "./services.js";

export async function registerLocalAgentServices(config: Config, nodes: NodeInfo[]): Promise<void> {
  const http = openConsulHttp(config);
  for (const node of nodes) await registerAgentService(http, node, { interval: "2s" });
}

/** Best effort: returns the nodes that could not be deregistered. */
export async function deregisterLocalAgentServices(
  config: Config,
  nodes: NodeInfo[],
): Promise<{ node: string; error: string }[]> {
  const http = openConsulHttp(config);
  const failed: { node: string; error: string }[] = [];
  for (const node of nodes) {
    try {
      await deregisterAgentService(http, node.id);
    } catch (err) {
      failed.push({ node: node.id, error: errorMessage(err) });
    }
  }
  return failed;
}
