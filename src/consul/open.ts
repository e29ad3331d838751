/** Builds the Consul client and store from the config (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, prefix). */
import type { Config } from "../config.js";
import { UsageError } from "../errors.js";
import { ConsulHttp } from "./http.js";
import { normalizePrefix } from "./keys.js";
import { ConsulStore, type ConsulStoreOptions } from "./store.js";

/** Request bound in ms: SHARDCTL_CONSUL_TIMEOUT (seconds) or 5 s. */
export function consulTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.SHARDCTL_CONSUL_TIMEOUT;
  if (raw === undefined || raw === "") return 5000;
  const s = Number(raw);
  // decimal only (Number() would read 0x10, 1e2, " 5")
  // at least 1 ms: a bound that rounds to 0 would be no bound at all (a request timeout of 0 waits forever)
  if (!/^[0-9]+(\.[0-9]+)?$/.test(raw) || !Number.isFinite(s) || s < 0.001 || s > 300) {
    throw new UsageError(
      `SHARDCTL_CONSUL_TIMEOUT must be a number of seconds from 0.001 to 300, got ${JSON.stringify(raw)}`,
    );
  }
  return Math.round(s * 1000);
}

export function openConsulHttp(config: Config, env: NodeJS.ProcessEnv = process.env): ConsulHttp {
  return new ConsulHttp({
    addr: config.consul.addr,
    token: config.consul.token,
    prefix: normalizePrefix(config.consul.prefix),
    timeoutMs: consulTimeoutMs(env),
  });
}

export function openConsulStore(
  config: Config,
  opts: Partial<Omit<ConsulStoreOptions, "http" | "prefix">> = {},
  env: NodeJS.ProcessEnv = process.env,
): ConsulStore {
  return new ConsulStore({ ...opts, http: openConsulHttp(config, env), prefix: config.consul.prefix });
}
