/** Opens the location store the config names: embedded (a file) or Consul. */
import type { Config } from "../config.js";
import type { LocationStore } from "../engine/ports.js";
import { UserError } from "../errors.js";
import { EmbeddedStore } from "./embedded.js";

export type StoreOpener = (config: Config) => Promise<LocationStore>;

const openers: Record<Config["store"], StoreOpener | undefined> = {
  embedded: async (config) => new EmbeddedStore(config.dataDir),
  consul: undefined,
};

/** The Consul store registers itself here (src/consul), keeping this module free of Consul code. */
export function registerStoreOpener(kind: Config["store"], opener: StoreOpener): void {
  openers[kind] = opener;
}

export async function openStore(config: Config): Promise<LocationStore> {
  if (config.store === "consul" && !openers.consul) await import("../consul/register.js");
  const open = openers[config.store];
  if (!open) throw new UserError(`the ${config.store} store is not available in this build`);
  return open(config);
}
