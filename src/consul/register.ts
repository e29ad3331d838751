/**
 * Side effect: registers the Consul opener with src/store, which imports this
 * module lazily when `store: consul` is configured (so the embedded path never
 * loads the Consul client).
 */
import { registerStoreOpener } from "../store/index.js";
import { openConsulStore } from "./open.js";

registerStoreOpener("consul", async (config) => openConsulStore(config));
