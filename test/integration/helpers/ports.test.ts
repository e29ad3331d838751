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
});
