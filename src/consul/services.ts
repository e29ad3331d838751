/**
 * Agents as Consul services: `shardctl-agent`, id = node id, zone in the
 * metadata, an HTTP check on the agent's /health. `listAgentNodes` reads them
 * back from the health API with their aggregated check status.
 */
import type { NodeInfo } from "../engine/location-map.js";
import { NODE_ID_PATTERN } from "../engine/location-map.js";
import { UsageError } from "../errors.js";
import type { ConsulHttp } from "./http.js";

export const AGENT_SERVICE = "shardctl-agent";

export interface AgentServiceOptions {
  /** Check interval and timeout (Consul durations). */
  interval?: string;
  timeout?: string;
  /** A service critical this long is removed from the catalog. */
  deregisterAfter?: string;
}

export function splitAddress(address: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new UsageError(`agent address ${JSON.stringify(address)} is not host:port`, {
      hint: "e.g. 10.0.0.5:7000",
    });
  }
  return { host: m[1].replace(/^\[|\]$/g, ""), port };
}

export async function registerAgentService(
  http: ConsulHttp,
  node: NodeInfo,
  opts: AgentServiceOptions = {},
): Promise<void> {
  if (!NODE_ID_PATTERN.test(node.id)) throw new UsageError(`node id ${JSON.stringify(node.id)} is not valid`);
  const { host, port } = splitAddress(node.address);
  const hostForUrl = host.includes(":") ? `[${host}]` : host;
  await http.serviceRegister({
    ID: node.id,
    Name: AGENT_SERVICE,
    Address: host,
    Port: port,
    Meta: { zone: node.zone },
    Check: {
      HTTP: `http://${hostForUrl}:${port}/health`,
      Interval: opts.interval ?? "5s",
      Timeout: opts.timeout ?? "2s",
      DeregisterCriticalServiceAfter: opts.deregisterAfter ?? "1h",
    },
  });
}

export async function deregisterAgentService(http: ConsulHttp, nodeId: string): Promise<void> {
  await http.serviceDeregister(nodeId);
}

export type Health = "passing" | "warning" | "critical" | "unknown";

export interface AgentNode {
  id: string;
  address: string;
  zone: string;
  health: Health;
  /** The Consul node the service is registered on. */
  consulNode: string;
  output: string;
}

/** Worst status of the service's checks (the node's serfHealth included). */
export function aggregateHealth(statuses: string[]): Health {
  if (statuses.length === 0) return "unknown";
  if (statuses.includes("critical")) return "critical";
  if (statuses.includes("warning")) return "warning";
  if (statuses.every((s) => s === "passing")) return "passing";
  return "unknown";
}

export async function listAgentNodes(http: ConsulHttp): Promise<AgentNode[]> {
  const entries = await http.healthService(AGENT_SERVICE);
  return entries
    .map((e) => {
      const host = e.Service.Address || e.Node.Address;
      const failing = e.Checks.find((c) => c.Status !== "passing");
      return {
        id: e.Service.ID,
        address: `${host.includes(":") ? `[${host}]` : host}:${e.Service.Port}`,
        zone: e.Service.Meta?.zone ?? "",
        health: aggregateHealth(e.Checks.map((c) => c.Status)),
        consulNode: e.Node.Node,
        output: (failing?.Output ?? "").trim().split("\n")[0].slice(0, 200),
      };
    })
    .sort((a, b) => a.id.localeCompare(b.id));
}
