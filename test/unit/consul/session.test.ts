import { afterEach, describe, expect, it, vi } from "vitest";
import type { ConsulHttp } from "../../../src/consul/http.js";
import { keepSessionAlive } from "../../../src/consul/session.js";

afterEach(() => vi.restoreAllMocks());

describe("keeping a Consul session alive", () => {
  it("renews every TTL/3 although the wall clock is stepped back (its timing is on the monotonic clock)", async () => {
    // the holder's wall clock steps back an hour 50 ms after the session is kept alive (an NTP correction): before, the
    // renewal was timed on it, no renewal was sent for that hour, Consul dropped the session and
    // its key, and the holder went on as if it held the lock (nothing aborted `lost`)
    const realNow = Date.now.bind(Date);
    const stepAt = realNow() + 50;
    vi.spyOn(Date, "now").mockImplementation(() => {
      const t = realNow();
      return t >= stepAt ? t - 3_600_000 : t;
    });
    let renewals = 0;
    const http = {
      sessionRenew: async () => {
        renewals++;
        return true;
      },
    } as unknown as ConsulHttp;
    const lost = new AbortController();
    const stop = keepSessionAlive(http, "s-1", lost, { ttlS: 0.3 });
    await new Promise((r) => setTimeout(r, 700));
    await stop();
    // TTL/3 = 100 ms, timed on ticks of 100 ms: about one renewal per 200 ms at the least
    expect(renewals).toBeGreaterThanOrEqual(2);
    expect(lost.signal.aborted).toBe(false);
  });

  it("aborts `lost` when Consul no longer knows the session", async () => {
    const http = { sessionRenew: async () => false } as unknown as ConsulHttp;
    const lost = new AbortController();
    const losses: unknown[] = [];
    const stop = keepSessionAlive(http, "s-1", lost, { ttlS: 0.3, onLost: (l) => losses.push(l) });
    await new Promise((r) => setTimeout(r, 500));
    await stop();
    expect(lost.signal.aborted).toBe(true);
    expect(losses).toEqual([{ reason: "gone" }]);
  });
});
