/** Prometheus metrics of one agent (prom-client, its own registry). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class AgentMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"op" | "status">;
  readonly batchEntries: Histogram;
  readonly fsyncSeconds: Histogram;
  readonly writtenBytes: Counter;
  readonly exportSnapshotReads: Counter;

  constructor(gauges: { shards: () => number; keys: () => number; logBytes: () => number }) {
    collectDefaultMetrics({ register: this.registry, prefix: "shardctl_agent_" });
    const counts = () => this.requestCountsSnapshot();
    this.requests = new Counter({
      name: "shardctl_agent_requests_total",
      help: "API requests by operation and HTTP status",
      labelNames: ["op", "status"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const c of counts()) this.inc({ op: c.op, status: c.status }, c.count);
      },
    });
    this.batchEntries = new Histogram({
      name: "shardctl_agent_group_commit_entries",
      help: "Log entries made durable by one fsync (group commit size)",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024],
      registers: [this.registry],
    });
    this.fsyncSeconds = new Histogram({
      name: "shardctl_agent_log_flush_seconds",
      help: "Time of one group commit (write + fdatasync)",
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
      registers: [this.registry],
    });
    this.writtenBytes = new Counter({
      name: "shardctl_agent_log_written_bytes_total",
      help: "Bytes appended to shard logs",
      registers: [this.registry],
    });
    this.exportSnapshotReads = new Counter({
      name: "shardctl_agent_export_snapshot_reads_total",
      help: "Snapshots read from their start for a page of a split or merge export (a page that goes on where the previous one stopped does not count)",
      registers: [this.registry],
    });
    new Gauge({
      name: "shardctl_agent_shards",
      help: "Shards hosted (released copies, kept only to redirect clients, not counted)",
      registers: [this.registry],
      collect() {
        this.set(gauges.shards());
      },
    });
    new Gauge({
      name: "shardctl_agent_keys",
      help: "Live keys over all shards",
      registers: [this.registry],
      collect() {
        this.set(gauges.keys());
      },
    });
    new Gauge({
      name: "shardctl_agent_log_bytes",
      help: "Bytes of log files on disk",
      registers: [this.registry],
      collect() {
        this.set(gauges.logBytes());
      },
    });
  }

  /** Requests per operation and status, counted in plain numbers and handed to prom-client at scrape time. */
  private readonly requestCounts = new Map<string, Map<number | string, number>>();

  /** Counts one request. On every request's path: no string building, no prom-client call. */
  countRequest(op: string, status: number | string): void {
    let byStatus = this.requestCounts.get(op);
    if (!byStatus) this.requestCounts.set(op, (byStatus = new Map()));
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
  }

  /** The request counts so far, per operation and status (what /metrics reports). */
  requestCountsSnapshot(): { op: string; status: string; count: number }[] {
    const out: { op: string; status: string; count: number }[] = [];
    for (const [op, byStatus] of this.requestCounts)
      for (const [status, count] of byStatus) out.push({ op, status: String(status), count });
    return out;
  }

  recordFlush(entries: number, bytes: number, ms: number): void {
    this.batchEntries.observe(entries);
    this.fsyncSeconds.observe(ms / 1000);
    this.writtenBytes.inc(bytes);
  }
}
