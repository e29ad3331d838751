/**
 * The Log Shard Management Module, as the specification names its API:
 * getShardLocation(dataKey), updateAccessPattern(dataKey, accessType),
 * triggerResharding(). Pure: it is handed a LocationStore, the access windows
 * and a Clock.
 */
import { PreconditionError } from "../errors.js";
import { AccessWindows, parseAccessType, type AccessType } from "./access-windows.js";
import { applyLayoutDiff, planLayout, type AssignerOptions, type LayoutDiff } from "./assigner.js";
import {
  checkSegmentCount,
  RoutingTable,
  validateMap,
  type LocationMap,
  type ShardInfo,
} from "./location-map.js";
import type { Clock, LocationStore } from "./ports.js";
import { Segmenter } from "./segmenter.js";

export interface LsmmDeps {
  store: LocationStore;
  windows: AccessWindows;
  segmenter: Segmenter;
  clock: Clock;
  assigner: AssignerOptions;
  /** Window over which access rates feed resharding. */
  rateWindowSeconds: number;
}

export interface ShardLocation {
  key: string;
  segment: number;
  shard: string;
  node: string;
  epoch: number;
  address?: string;
  zone?: string;
  mapVersion: number;
}

export interface ReshardResult {
  diff: LayoutDiff;
  /** The map version the diff was computed against. */
  baseVersion: number;
  /** The version written, when applied. */
  appliedVersion?: number;
  /** Why an --apply did not write (the caller's canApply said no). */
  notApplied?: string;
  /** The change that stopped an --apply left its shards fenced or its roll-forward pending. */
  leftOpen?: boolean;
  /**
   * A change was attempted and failed (the executor's verdict): not one merely held back, refused
   * before it started, or left unstarted because the caller was stopping.
   */
  failed?: boolean;
}

export class Lsmm {
  private table?: RoutingTable;

  constructor(private readonly deps: LsmmDeps) {}

  /** Reads the map from the store (consistently when asked) and rebuilds the routing table. */
  async refresh(consistent = false): Promise<RoutingTable> {
    const vm = await this.deps.store.load({ consistent });
    if (!vm) {
      throw new PreconditionError("the location store holds no layout yet", {
        hint: "create one with `shardctl init` (or `shardctl up --local`)",
      });
    }
    checkSegmentCount(vm.map, this.deps.segmenter.segmentCount);
    this.table = new RoutingTable(vm);
    return this.table;
  }

  private routing(): RoutingTable {
    if (!this.table) throw new PreconditionError("the location map has not been loaded (call refresh first)");
    return this.table;
  }

  /** get_shard_location(data_key): the node id hosting the key's log shard. */
  getShardLocation(dataKey: string): string {
    return this.routing().nodeOfSegment(this.deps.segmenter.segmentOf(dataKey));
  }

  /** The full location of a key: segment, shard, epoch, node and its address. */
  locate(dataKey: string): ShardLocation {
    const table = this.routing();
    const segment = this.deps.segmenter.segmentOf(dataKey);
    const shard: ShardInfo = table.shardOf(segment);
    const node = table.node(shard.node);
    return {
      key: dataKey,
      segment,
      shard: shard.id,
      node: shard.node,
      epoch: shard.epoch,
      address: node?.address,
      zone: node?.zone,
      mapVersion: table.version,
    };
  }

  /** update_access_pattern(data_key, access_type): records one access (optionally from an origin zone). */
  updateAccessPattern(dataKey: string, accessType: AccessType | string, zone?: string, count = 1): number {
    const type = parseAccessType(accessType);
    const zoneIdx = this.deps.windows.zoneIndexOf(zone);
    const segment = this.deps.segmenter.segmentOf(dataKey);
    this.deps.windows.record(segment, type === "write", zoneIdx, this.deps.clock.now(), count);
    return segment;
  }

  /**
   * trigger_resharding(): re-evaluates the layout from the windows and returns
   * the diff; with apply, commits it by compare-and-set against the version
   * it was computed from (a lost race is a PreconditionError, never an overwrite).
   */
  async triggerResharding(
    opts: {
      apply?: boolean;
      /** Asked before writing: a reason not to apply (e.g. data that cannot move yet), or undefined. */
      canApply?: (diff: LayoutDiff, map: LocationMap) => string | undefined;
      /**
       * Carries the diff out instead of one map write, when data must move
       * between the agents' shards (a split or merge per migration). Returns
       * the map version after the last change it committed, and why it stopped
       * short, if it did.
       */
      execute?: (
        diff: LayoutDiff,
        map: LocationMap,
        version: number,
      ) => Promise<{ appliedVersion?: number; notApplied?: string; leftOpen?: boolean; failed?: boolean }>;
    } = {},
  ): Promise<ReshardResult> {
    const table = await this.refresh(true);
    const now = this.deps.clock.now();
    const loads = this.deps.windows.loads(this.deps.rateWindowSeconds, now);
    const diff = planLayout(table.map, loads, this.deps.assigner, now);
    const result: ReshardResult = { diff, baseVersion: table.version };
    if (!opts.apply || diff.ops.length === 0) return result;
    const refusal = opts.canApply?.(diff, table.map);
    if (refusal) return { ...result, notApplied: refusal };
    if (opts.execute) {
      const done = await opts.execute(diff, table.map, table.version);
      await this.refresh();
      return { ...result, ...done };
    }
    // written as an operator's (term 0): the map's last term may be a leader's since deposed, which the
    // store would refuse; the autopilot's store stamps its own term on every write
    const next = { ...applyLayoutDiff(table.map, diff, now), term: 0 };
    validateMap(next);
    const cas = await this.deps.store.compareAndSet(table.version, next);
    if (!cas.ok) {
      throw new PreconditionError(
        `the layout changed while resharding (version ${table.version} → ${cas.currentVersion}); nothing was written`,
        { hint: "run `shardctl reshard` again to plan against the new layout" },
      );
    }
    result.appliedVersion = cas.version;
    await this.refresh();
    return result;
  }
}
