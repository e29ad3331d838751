/** The node's resources as the engine sees them: CPU, memory, disk free, shard count. */
import { statfs } from "node:fs/promises";
import { cpus, freemem, loadavg, totalmem } from "node:os";

export interface NodeResources {
  cpu: { cores: number; loadAvg1: number; loadAvg5: number; loadAvg15: number; processCpuSeconds: number };
  memory: { totalBytes: number; freeBytes: number; rssBytes: number };
  disk: { path: string; totalBytes: number; freeBytes: number; availableBytes: number };
}

export async function nodeResources(dataDir: string): Promise<NodeResources> {
  const s = await statfs(dataDir);
  const usage = process.cpuUsage();
  const [l1, l5, l15] = loadavg();
  return {
    cpu: {
      cores: cpus().length,
      loadAvg1: l1,
      loadAvg5: l5,
      loadAvg15: l15,
      processCpuSeconds: (usage.user + usage.system) / 1e6,
    },
    memory: { totalBytes: totalmem(), freeBytes: freemem(), rssBytes: process.memoryUsage.rss() },
    disk: {
      path: dataDir,
      totalBytes: s.blocks * s.bsize,
      freeBytes: s.bfree * s.bsize,
      availableBytes: s.bavail * s.bsize,
    },
  };
}
