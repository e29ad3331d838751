/** Building blocks shared by commands: the engine wired to the configured store. */
import type { Config } from "../config.js";
import { AccessWindows } from "../engine/access-windows.js";
import type { AssignerOptions } from "../engine/assigner.js";
import { Lsmm } from "../engine/lsmm.js";
import { systemClock, type Clock, type LocationStore } from "../engine/ports.js";
import { Segmenter } from "../engine/segmenter.js";

export function assignerOptions(config: Config): AssignerOptions {
  const r = config.reshard;
  return {
    splitRate: r.splitRate,
    mergeRate: r.mergeRate,
    shardLoadCap: r.shardLoadCap,
    hysteresis: r.hysteresis,
    minDwellMs: r.minDwellSeconds * 1000,
  };
}

export function segmenterFor(config: Config): Segmenter {
  return new Segmenter(config.segments, config.limits.maxKeyBytes);
}

export function lsmmFor(
  config: Config,
  store: LocationStore,
  windows: AccessWindows,
  clock: Clock = systemClock,
): Lsmm {
  return new Lsmm({
    store,
    windows,
    segmenter: segmenterFor(config),
    clock,
    assigner: assignerOptions(config),
    rateWindowSeconds: config.reshard.rateWindowSeconds,
  });
}

export { parsePositiveInt } from "../numbers.js";

/** Runs fn with a store and closes the store afterwards. */
export async function withStore<T>(
  open: () => Promise<LocationStore>,
  fn: (store: LocationStore) => Promise<T>,
): Promise<T> {
  const store = await open();
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export { MAX_INPUT_BYTES, MAX_TRACE_BYTES, readInputBytes, readInputText } from "../input-file.js";
