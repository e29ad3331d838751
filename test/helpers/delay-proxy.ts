/**
 * A user-space TCP proxy on 127.0.0.1 that delays every chunk by a fixed
 * number of milliseconds in each direction, so that a request/answer round
 * trip through it takes at least 2 × delayMs more. Order is kept (one timer
 * queue per direction, equal delays). Only loopback: it listens on and
 * connects to 127.0.0.1 and nothing else.
 */
import { createServer, connect, type Server, type Socket } from "node:net";

export interface DelayProxy {
  /** host:port to put in the map instead of the target's address. */
  address: string;
  port: number;
  delayMs: number;
  /** Changes the delay of the chunks forwarded from now on. */
  setDelay: (ms: number) => void;
  /** Cuts every open connection and refuses new ones (closed at once) for `ms`. */
  cut: (ms: number) => void;
  /** Connections accepted so far. */
  connections: () => number;
  close: () => Promise<void>;
}

/** Forwards `from` to `to`, each chunk `delayMs` later; ends and errors are passed on after the data. */
function pipeDelayed(from: Socket, to: Socket, delay: () => number): void {
  from.on("data", (chunk: Buffer) => {
    setTimeout(() => {
      if (!to.destroyed) to.write(chunk);
    }, delay());
  });
  from.on("end", () => setTimeout(() => to.end(), delay()));
  from.on("error", () => to.destroy());
  from.on("close", () => setTimeout(() => to.destroy(), delay() + 5));
}

export async function startDelayProxy(targetPort: number, delayMs: number): Promise<DelayProxy> {
  if (!Number.isInteger(targetPort) || targetPort < 1 || targetPort > 65535)
    throw new Error(`bad target port ${targetPort}`);
  if (!Number.isFinite(delayMs) || delayMs < 0 || delayMs > 10_000) throw new Error(`bad delay ${delayMs}`);
  const sockets = new Set<Socket>();
  let accepted = 0;
  let delay = delayMs;
  let cutUntil = 0;
  const server: Server = createServer((client) => {
    accepted++;
    if (Date.now() < cutUntil) {
      client.destroy();
      return;
    }
    const upstream = connect({ host: "127.0.0.1", port: targetPort });
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    }
    pipeDelayed(client, upstream, () => delay);
    pipeDelayed(upstream, client, () => delay);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    port,
    delayMs,
    setDelay: (ms) => {
      delay = ms;
    },
    cut: (ms) => {
      cutUntil = Date.now() + ms;
      for (const s of sockets) s.destroy();
    },
    connections: () => accepted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
