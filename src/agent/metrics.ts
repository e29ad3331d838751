/** Prometheus metrics of one agent (prom-client, its own registry). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class AgentMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"op" | "status">;
  readonly batchEntries: Histogram;
  readonly fsyncSeconds: Histogram;
  readonly writtenBytes: Counter;

  constructor(gauges: { shards: () => number; keys: () => number; logBytes: () => number }) {
    collectDefaultMetrics({ register: this.registry, prefix: "shardctl_agent_" });
    this.requests = new Counter({
      name: "shardctl_agent_requests_total",
      help: "API requests by operation and HTTP status",
      labelNames: ["op", "status"],
      registers: [this.registry],
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
    new Gauge({
      name: "shardctl_agent_shards",
      help: "Shards hosted",
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

  private readonly requestCounters = new Map<string, { inc(): void }>();

  /** Counts one request (label children cached: this is on every request's path). */
  countRequest(op: string, status: number | string): void {
    const k = `${op} ${status}`;
    let c = this.requestCounters.get(k);
    if (!c) {
      c = this.requests.labels(op, String(status));
      this.requestCounters.set(k, c);
    }
    c.inc();
  }

  recordFlush(entries: number, bytes: number, ms: number): void {
    this.batchEntries.observe(entries);
    this.fsyncSeconds.observe(ms / 1000);
    this.writtenBytes.inc(bytes);
  }
}
