/** A small builder of layouts and loads for engine tests. */
import { initialLayout, type LocationMap, type NodeInfo } from "../../../src/engine/location-map.js";

export class ClusterBuilder {
  private nodes: NodeInfo[] = [];
  private segments = 64;
  private shardsPerNode = 2;
  private loads: number[] = [];

  withNodes(...ids: string[]): this {
    this.nodes = ids.map((id, i) => ({ id, address: `127.0.0.1:${7400 + i}`, zone: ["a", "b", "c"][i % 3] }));
    return this;
  }

  withSegments(n: number, shardsPerNode = 2): this {
    this.segments = n;
    this.shardsPerNode = shardsPerNode;
    return this;
  }

  /** Sets a segment's load (accesses/s). */
  hot(segment: number, load: number): this {
    this.loads[segment] = load;
    return this;
  }

  map(): LocationMap {
    if (this.nodes.length === 0) this.withNodes("n1");
    return initialLayout(this.segments, this.nodes, { shardsPerNode: this.shardsPerNode, now: 0 });
  }

  loadArray(base = 0): Float64Array {
    const out = new Float64Array(this.segments).fill(base);
    this.loads.forEach((l, s) => {
      if (l !== undefined) out[s] = l;
    });
    return out;
  }
}
