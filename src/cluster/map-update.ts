/**
 * One change to the location map by compare-and-set, as deploy, undeploy and
 * recovery make theirs: the map is read (consistently), `change` says what to
 * write, and it is written only if the map is still the version read. When
 * another writer came between, the map is read again and `change` asked again,
 * up to MAP_UPDATE_ATTEMPTS times, so that a change never overwrites one it
 * did not see.
 */
import type { LocationMap, VersionedMap } from "../engine/location-map.js";
import type { LocationStore } from "../engine/ports.js";

export const MAP_UPDATE_ATTEMPTS = 8;

/** What `change` decided: nothing to write (`done`), or a map to write and what to return once it is. */
export type MapUpdate<T> = { done: T } | { write: LocationMap; then: T };

/**
 * Applies `change` to the map; `exhausted` decides (returns or throws) when every attempt lost its
 * compare-and-set to another writer.
 */
export async function updateMap<T>(
  store: LocationStore,
  change: (vm: VersionedMap | null) => Promise<MapUpdate<T>> | MapUpdate<T>,
  exhausted: () => T,
): Promise<T> {
  for (let attempt = 0; attempt < MAP_UPDATE_ATTEMPTS; attempt++) {
    const vm = await store.load({ consistent: true });
    const u = await change(vm);
    if ("done" in u) return u.done;
    const cas = await store.compareAndSet(vm?.version ?? 0, u.write);
    if (cas.ok) return u.then;
  }
  return exhausted();
}
