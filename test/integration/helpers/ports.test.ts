import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { freePort, freePorts } from "../../helpers/ports.js";

const bindable = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });

describe("free ports for test servers", () => {
  it("hands out distinct, bindable ports, never the same one twice in a process", async () => {
    const first = await freePorts(30);
    const more = await Promise.all(Array.from({ length: 30 }, () => freePort()));
    const all = [...first, ...more];
    expect(new Set(all).size).toBe(60);
    for (const p of all) expect(p).toBeGreaterThan(0);
    for (const p of all.slice(0, 5)) expect(await bindable(p)).toBe(true);
  });

  it("takes them below the kernel's ephemeral range, where outgoing connections cannot take them", async () => {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    const ports = await freePorts(50);
    if (low >= 20000) {
      // Linux's default range, and this machine's: the ports are taken from 10000–19999
      for (const p of ports) expect(p >= 10000 && p < 20000).toBe(true);
    } else {
      // no room below it: the kernel picks, and the ports are still distinct
      expect(new Set(ports).size).toBe(50);
    }
  });
});
