/**
 * Starts and stops real Consul agents for tests: a `-dev` server (optionally
 * with ACLs, default policy deny) or a 3-server cluster on loopback ports.
 * The binary comes from $CONSUL_BIN or `bash scripts/consul.sh`; when neither
 * yields one the tests FAIL (they never skip).
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort, freePorts } from "./ports.js";
import { fileURLToPath } from "node:url";
import { processState } from "./proc.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
let cachedBin: string | undefined;

export function consulBinary(): string {
  if (cachedBin) return cachedBin;
  const fromEnv = process.env.CONSUL_BIN;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`CONSUL_BIN=${fromEnv} does not exist`);
    return (cachedBin = fromEnv);
  }
  let out: string;
  try {
    out = execFileSync("bash", [join(repoRoot, "scripts/consul.sh")], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
      timeout: 30 * 60 * 1000,
    }).trim();
  } catch (err) {
    throw new Error(
      `no consul binary: set CONSUL_BIN or make scripts/consul.sh work (${(err as Error).message})`,
    );
  }
  const bin = out.split("\n").pop() ?? "";
  if (!bin || !existsSync(bin))
    throw new Error(`scripts/consul.sh printed ${JSON.stringify(out)}, not a consul binary`);
  return (cachedBin = bin);
}

export { freePort };

export const MANAGEMENT_TOKEN = "5ad0c0de-0000-4000-8000-00000000c0de";

export interface ConsulProcess {
  addr: string;
  httpPort: number;
  serverPort: number;
  serfLanPort: number;
  child: ChildProcess;
  dataDir: string;
  logs: () => string;
  /** SIGSTOP / SIGCONT: a Consul that accepts connections but never answers. */
  /** SIGSTOP, resolved once the kernel reports the process stopped (a signal is not instant). */
  pause(): Promise<void>;
  resume(): void;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

interface Ports {
  http: number;
  server: number;
  serfLan: number;
  serfWan: number;
}

/** Ports for `count` Consul processes, all distinct. */
async function ports(count = 1): Promise<Ports[]> {
  const all = await freePorts(4 * count);
  return Array.from({ length: count }, (_, i) => {
    const [http, server, serfLan, serfWan] = all.slice(4 * i, 4 * i + 4);
    return { http, server, serfLan, serfWan };
  });
}

function launch(args: string[], p: Ports, dataDir: string): ConsulProcess {
  const child = spawn(consulBinary(), args, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const keep = (b: Buffer) => {
    log += b.toString();
    if (log.length > 200_000) log = log.slice(-100_000);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<void>((res) => child.once("exit", () => res()));
  return {
    addr: `127.0.0.1:${p.http}`,
    httpPort: p.http,
    serverPort: p.server,
    serfLanPort: p.serfLan,
    child,
    dataDir,
    logs: () => log,
    async pause() {
      child.kill("SIGSTOP");
      const deadline = Date.now() + 5000;
      while (processState(child.pid!) !== "T") {
        if (Date.now() > deadline) throw new Error(`consul (pid ${child.pid}) did not stop within 5 s`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    resume: () => child.kill("SIGCONT"),
    async kill(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGCONT");
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function commonArgs(p: Ports, dataDir: string, clientAddrs: string[] = [], logLevel = "warn"): string[] {
  return [
    "agent",
    "-bind=127.0.0.1",
    // the HTTP API on loopback, and on the test's own other addresses (e.g. namespaces' veth peers)
    `-client=${["127.0.0.1", ...clientAddrs.filter((a) => a !== "127.0.0.1")].join(" ")}`,
    `-http-port=${p.http}`,
    "-dns-port=-1",
    "-grpc-port=-1",
    "-grpc-tls-port=-1",
    `-serf-lan-port=${p.serfLan}`,
    `-serf-wan-port=${p.serfWan}`,
    `-server-port=${p.server}`,
    `-data-dir=${dataDir}`,
    `-log-level=${logLevel}`,
  ];
}

async function waitForLeader(
  addr: string,
  token: string | undefined,
  ms: number,
  proc: ConsulProcess[],
): Promise<void> {
  const deadline = Date.now() + ms;
  let last = "no answer yet";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`http://${addr}/v1/status/leader`, {
        headers: token ? { "X-Consul-Token": token } : {},
      });
      const body = await res.text();
      last = `status/leader: ${res.status} ${body.slice(0, 200)}`;
      if (res.ok && body.length > 4) {
        // The leader is known; make sure KV writes go through (ACL bootstrap done).
        const put = await fetch(`http://${addr}/v1/kv/__ready`, {
          method: "PUT",
          body: "1",
          headers: token ? { "X-Consul-Token": token } : {},
        });
        if (put.ok) return;
        last = `leader ${body}, KV PUT: ${put.status} ${(await put.text()).slice(0, 200)}`;
      }
    } catch (err) {
      last = `not answering: ${(err as Error).message}`; // not listening yet
    }
    for (const p of proc) {
      if (p.child.exitCode !== null) throw new Error(`consul exited early:\n${p.logs()}`);
    }
    await sleep(100);
  }
  throw new Error(
    `consul at ${addr} did not elect a leader within ${ms} ms (last: ${last}):\n${proc.map((p) => p.logs()).join("\n---\n")}`,
  );
}

export interface DevConsul extends ConsulProcess {
  /** Management token when started with ACLs. */
  token?: string;
  stop(): Promise<void>;
}

/** One `consul agent -dev` on free loopback ports; with acl: ACLs on, default policy deny. */
export async function startConsulDev(
  opts: {
    acl?: boolean;
    /** More addresses of this machine for the HTTP API (it always listens on 127.0.0.1). */
    clientAddrs?: string[];
    /** Consul's session_ttl_min (default 10 s): lower, for tests that wait for a session to expire. */
    sessionTtlMinS?: number;
  } = {},
): Promise<DevConsul> {
  return retryOnPortTaken(() => startConsulDevOnce(opts));
}

/**
 * Starts again on new ports when a port was taken between choosing it and
 * Consul's bind (another test's server or connection can take it meanwhile);
 * any other failure is thrown at once.
 */
async function retryOnPortTaken<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startConsulDevOnce(opts: Parameters<typeof startConsulDev>[0] = {}): Promise<DevConsul> {
  const [p] = await ports();
  const dataDir = mkdtempSync(join(tmpdir(), "shardctl-consul-"));
  const args = [...commonArgs(p, dataDir, opts.clientAddrs), "-dev", "-node=dev"];
  if (opts.acl) {
    const file = join(dataDir, "acl.hcl");
    writeFileSync(
      file,
      `acl {\n  enabled = true\n  default_policy = "deny"\n  enable_token_persistence = false\n  tokens {\n    initial_management = "${MANAGEMENT_TOKEN}"\n  }\n}\n`,
    );
    args.push(`-config-file=${file}`);
  }
  if (opts.sessionTtlMinS !== undefined) {
    const file = join(dataDir, "session.hcl");
    writeFileSync(file, `session_ttl_min = "${opts.sessionTtlMinS}s"\n`);
    args.push(`-config-file=${file}`);
  }
  const proc = launch(args, p, dataDir);
  try {
    await waitForLeader(proc.addr, opts.acl ? MANAGEMENT_TOKEN : undefined, 30_000, [proc]);
  } catch (err) {
    await proc.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    ...proc,
    token: opts.acl ? MANAGEMENT_TOKEN : undefined,
    async stop() {
      await proc.kill();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface ConsulCluster {
  servers: ConsulProcess[];
  /** The server currently leading raft (by its server port), or undefined. */
  leader(): Promise<ConsulProcess | undefined>;
  waitForLeader(ms: number, among?: ConsulProcess[]): Promise<ConsulProcess>;
  stop(): Promise<void>;
}

/**
 * Three servers on loopback, -bootstrap-expect 3, raft_multiplier 1 (production
 * timing). They normally agree on a leader within 2 s; once in CI (a loaded
 * machine), one server did not learn of the leader the other two had within
 * 60 s. A cluster that has not settled within 40 s is therefore stopped and
 * started again on new ports, up to three times, and the failed attempt's
 * diagnosis (each server's last answer and its info-level log) is printed.
 */
export async function startConsulCluster(size = 3): Promise<ConsulCluster> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await retryOnPortTaken(() => startConsulClusterOnce(size));
    } catch (err) {
      const message = (err as Error).message;
      if (attempt >= 3 || !/did not elect a leader/.test(message)) throw err;
      console.warn(
        `consul cluster attempt ${attempt} did not settle; starting again on new ports:\n${message}`,
      );
    }
  }
}

async function startConsulClusterOnce(size: number): Promise<ConsulCluster> {
  const all = await ports(size);
  const servers: ConsulProcess[] = [];
  for (let i = 0; i < size; i++) {
    const p = all[i];
    const dataDir = mkdtempSync(join(tmpdir(), `shardctl-consul-s${i}-`));
    const cfg = join(dataDir, "perf.hcl");
    writeFileSync(cfg, `performance {\n  raft_multiplier = 1\n}\ndisable_update_check = true\n`);
    const args = [
      ...commonArgs(p, dataDir, [], "info"),
      "-server",
      `-bootstrap-expect=${size}`,
      `-node=s${i}`,
      `-config-file=${cfg}`,
      ...all.filter((_, j) => j !== i).map((o) => `-retry-join=127.0.0.1:${o.serfLan}`),
    ];
    servers.push(launch(args, p, dataDir));
  }
  const leader = async (): Promise<ConsulProcess | undefined> => {
    for (const s of servers) {
      if (s.child.exitCode !== null || s.child.signalCode !== null) continue;
      try {
        const body = (await (await fetch(`http://${s.addr}/v1/status/leader`)).json()) as string;
        const port = Number(body.split(":").pop());
        const found = servers.find((x) => x.serverPort === port);
        if (found) return found;
      } catch {
        // try the next server
      }
    }
    return undefined;
  };
  const cluster: ConsulCluster = {
    servers,
    leader,
    async waitForLeader(ms, among = servers) {
      const deadline = Date.now() + ms;
      while (Date.now() < deadline) {
        const l = await leader();
        if (l && among.includes(l)) return l;
        await sleep(50);
      }
      throw new Error(`no leader within ${ms} ms:\n${servers.map((s) => s.logs()).join("\n---\n")}`);
    },
    async stop() {
      await Promise.all(servers.map((s) => s.kill()));
      for (const s of servers) rmSync(s.dataDir, { recursive: true, force: true });
    },
  };
  try {
    const deadline = Date.now() + 40_000;
    for (const s of servers)
      await waitForLeader(s.addr, undefined, Math.max(1000, deadline - Date.now()), servers);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** Creates an ACL policy + token through the management token; returns the token's secret. */
export async function createToken(consul: DevConsul, rules: string, name: string): Promise<string> {
  const h = { "X-Consul-Token": consul.token ?? "" };
  const pol = await fetch(`http://${consul.addr}/v1/acl/policy`, {
    method: "PUT",
    headers: h,
    body: JSON.stringify({ Name: name, Rules: rules }),
  });
  if (!pol.ok) throw new Error(`policy: ${pol.status} ${await pol.text()}`);
  const tok = await fetch(`http://${consul.addr}/v1/acl/token`, {
    method: "PUT",
    headers: h,
    body: JSON.stringify({ Policies: [{ Name: name }] }),
  });
  if (!tok.ok) throw new Error(`token: ${tok.status} ${await tok.text()}`);
  return ((await tok.json()) as { SecretID: string }).SecretID;
}

/** Raw KV helpers for tests (planting corrupt values, checking nothing was written). */
export async function rawPut(addr: string, key: string, value: string, token?: string): Promise<void> {
  const res = await fetch(`http://${addr}/v1/kv/${key}`, {
    method: "PUT",
    body: value,
    headers: token ? { "X-Consul-Token": token } : {},
  });
  if (!res.ok) throw new Error(`PUT ${key}: ${res.status} ${await res.text()}`);
}

export async function rawKeys(addr: string, prefix: string, token?: string): Promise<string[]> {
  const res = await fetch(`http://${addr}/v1/kv/${prefix}?keys`, {
    headers: token ? { "X-Consul-Token": token } : {},
  });
  if (res.status === 404) return [];
  if (!res.ok) throw new Error(`keys ${prefix}: ${res.status}`);
  return (await res.json()) as string[];
}

export async function rawDeleteTree(addr: string, prefix: string, token?: string): Promise<void> {
  await fetch(`http://${addr}/v1/kv/${prefix}?recurse`, {
    method: "DELETE",
    headers: token ? { "X-Consul-Token": token } : {},
  });
}

let prefixSeq = 0;
/** A prefix no other test in this process uses. */
export function uniquePrefix(name: string): string {
  return `t${process.pid}-${prefixSeq++}-${name}/`;
}
