/**
 * Free loopback ports for the servers tests and benchmarks start. The kernel
 * picks each (bind to port 0); the listener stays open until every port of the
 * call is taken, and a port this process has handed out once is never handed
 * out again, so two servers of one test can never be given the same port (one
 * Consul once got the same port for Serf WAN and RPC, from two calls that each
 * closed their listener before the next). They are taken below the ephemeral
 * range where it leaves room (10000–19999; `freePortRange` uses 20000–31999).
 */
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";

const handedOut = new Set<number>();

/**
 * Where to look for free ports: below the kernel's ephemeral range when it
 * leaves room, so that an outgoing connection (of this test or of one running
 * alongside) cannot take a port between the check here and the server's bind.
 * A Consul once failed to start with "bind: address already in use" on a port
 * the kernel had handed out as free moments before. Undefined: let the kernel
 * pick (port 0).
 */
const PORTS_BELOW = (() => {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return low >= 20000 ? { from: 10000, to: 20000 } : undefined;
  } catch {
    return undefined;
  }
})();

function listenOn(srv: Server, port: number): Promise<number | undefined> {
  return new Promise((res, rej) => {
    srv.once("error", (err: NodeJS.ErrnoException) =>
      err.code === "EADDRINUSE" || err.code === "EACCES" ? res(undefined) : rej(err),
    );
    srv.listen(port, "127.0.0.1", () => res((srv.address() as { port: number }).port));
  });
}

/** `n` distinct free ports, none handed out before by this process. */
export async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const taken: number[] = [];
    for (let attempt = 0; taken.length < n; attempt++) {
      if (attempt > 100 * n) throw new Error(`no ${n} free ports found on 127.0.0.1`);
      const want = PORTS_BELOW
        ? PORTS_BELOW.from + Math.floor(Math.random() * (PORTS_BELOW.to - PORTS_BELOW.from))
        : 0;
      if (handedOut.has(want)) continue;
      const srv = createServer();
      srv.unref();
      const port = await listenOn(srv, want);
      if (port === undefined) continue; // in use: try another
      servers.push(srv);
      if (handedOut.has(port)) continue; // kept open meanwhile, so the kernel picks another
      handedOut.add(port);
      taken.push(port);
    }
    return taken;
  } finally {
    await Promise.all(servers.map((srv) => new Promise<void>((res) => srv.close(() => res()))));
  }
}

/** One free port, never handed out before by this process. */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0];
}

/**
 * A base port whose next `n` ports are all free now, for `up --local --base-port`.
 * Chosen below Linux's ephemeral range (32768–60999), so that the outgoing
 * connections of tests running alongside cannot take base + 1 … base + n - 1
 * between this check and the agents' start.
 */
export async function freePortRange(n: number): Promise<number> {
  const bindable = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20000 + Math.floor(Math.random() * (12000 - n));
    let ok = true;
    for (let i = 0; i < n && ok; i++) ok = await bindable(base + i);
    if (ok) return base;
  }
  throw new Error(`no ${n} consecutive free ports found between 20000 and 32000`);
}
