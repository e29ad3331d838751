/**
 * A lab of real OpenSSH servers for the deploy tests. Each "host" is its own
 * /usr/sbin/sshd process with its own host key, config, authorized_keys and
 * root directory and, where `useradd` works, its own user (login shell /bin/sh,
 * so no ~/.bashrc slows every command down); where network namespaces work (root with CAP_NET_ADMIN) each
 * host also gets its own namespace and address (a veth pair, 10.X.Y.Z/30) and
 * listens on port 22 there — otherwise every host listens on its own port on
 * 127.0.0.1. `lab.cleanup()` stops every process the lab (or a deploy into it)
 * started, unmounts, deletes the namespaces and the files.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomInt } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createConnection, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort } from "./ports.js";

export interface SshHost {
  name: string;
  /** The address sshd listens on (and the agent will). */
  address: string;
  port: number;
  /** This host's private directory (its "root"); sshd's files are in root/etc. */
  root: string;
  /** The login user (its own, or root when users cannot be created here). */
  user: string;
  /** The user's home, writable by it: put dataDirs here. */
  home: string;
  hostKeyFile: string;
  /** `ssh-keygen -lf` of the host key: the fingerprint field ("SHA256:..."). */
  fingerprint: string;
  /** The known_hosts line for this host. */
  knownHostsLine: string;
  /** A port for this host's agent (7400 in its own namespace, else a free one). */
  agentPort: number;
  /** Where this host reaches the test machine (its veth peer in a namespace, else 127.0.0.1). */
  gateway: string;
  netns?: string;
  sshd?: ChildProcess;
}

export interface SshLab {
  dir: string;
  clientKey: string;
  clientKeyText: string;
  /** A key sshd does not accept. */
  strangerKey: string;
  netns: boolean;
  hosts: SshHost[];
  /**
   * A host; `tmpfs` mounts a small filesystem (owned by the host's user) at
   * home/<path> before sshd starts, so that sshd's mount namespace sees it.
   */
  addHost(
    name: string,
    opts?: { start?: boolean; authorizedKey?: string; tmpfs?: { path: string; sizeKiB: number } },
  ): Promise<SshHost>;
  /**
   * A TCP proxy to `host` that cuts both directions once `cutAfterBytes` went from client to server
   * (Infinity: never on its own); `cutNow()` cuts every connection open through it at once.
   */
  cuttingProxy(
    host: SshHost,
    cutAfterBytes: number,
  ): Promise<{ port: number; cut: () => boolean; cutNow: () => void }>;
  /** An ssh-agent holding the client key; its socket is the SSH_AUTH_SOCK to use. */
  startAgent(): Promise<string>;
  /** Pids of processes whose command line mentions `needle` (e.g. the node id of an agent). */
  processesWith(needle: string): number[];
  cleanup(): Promise<void>;
}

const SSHD = "/usr/sbin/sshd";

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

async function waitListening(address: string, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: address, port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`sshd on ${address}:${port} did not start listening`);
}

function netnsWorks(): boolean {
  const probe = `shx-probe-${process.pid}`;
  try {
    sh("ip", ["netns", "add", probe]);
    sh("ip", ["netns", "del", probe]);
    return true;
  } catch {
    return false;
  }
}

function usedSubnets(): string {
  try {
    return sh("ip", ["-4", "addr"]);
  } catch {
    return "";
  }
}

/** Pids of processes (other than this one) whose command line mentions `needle`. */
export function pidsMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      if (cmd.includes(needle)) out.push(Number(entry));
    } catch {
      // gone
    }
  }
  return out;
}

export async function startSshLab(opts: { useNetns?: boolean } = {}): Promise<SshLab> {
  const dir = mkdtempSync(join(tmpdir(), "shardctl-sshd-"));
  chmodSync(dir, 0o755); // the hosts' users reach their homes through it
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 }); // sshd's privilege separation directory
  const clientKey = join(dir, "client_ed25519");
  sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "shardctl-test-client", "-f", clientKey]);
  const strangerKey = join(dir, "stranger_ed25519");
  sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "stranger", "-f", strangerKey]);
  // SHARDCTL_TEST_NO_NETNS=1 forces the fallback (one port per host on 127.0.0.1), to test it
  const useNetns = (opts.useNetns ?? process.env.SHARDCTL_TEST_NO_NETNS !== "1") && netnsWorks();
  const hosts: SshHost[] = [];
  const mounts: string[] = [];
  const proxies: Server[] = [];
  const sockets = new Set<Socket>();
  const namespaces: string[] = [];
  const users: string[] = [];
  const agents: ChildProcess[] = [];
  // one /24 for the whole lab; host i gets the /30 at 4i
  const used = usedSubnets();
  let net = "";
  for (let attempt = 0; attempt < 50 && !net; attempt++) {
    const candidate = `10.${200 + randomInt(50)}.${randomInt(256)}`;
    if (!used.includes(`${candidate}.`)) net = candidate;
  }
  const tag = `${process.pid % 10000}${randomInt(100)}`;

  const lab: SshLab = {
    dir,
    clientKey,
    clientKeyText: readFileSync(clientKey, "utf8"),
    strangerKey,
    netns: useNetns,
    hosts,
    async addHost(name, hostOpts = {}) {
      const i = hosts.length;
      const root = join(dir, name);
      const etc = join(root, "etc");
      const home = join(root, "home");
      mkdirSync(etc, { recursive: true });
      mkdirSync(home, { recursive: true });
      chmodSync(root, 0o755);
      let user = "root";
      try {
        const candidate = `shx${tag}h${i}`;
        // '*' is not a locked password to sshd (a '!' is): key login works without PAM
        sh("useradd", ["-M", "-d", home, "-s", "/bin/sh", "-p", "*", candidate]);
        users.push(candidate);
        sh("chown", [`${candidate}:`, home]);
        user = candidate;
      } catch {
        // no useradd here: log in as root
      }
      const hostKeyFile = join(etc, "ssh_host_ed25519_key");
      sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `host-${name}`, "-f", hostKeyFile]);
      const fingerprint = sh("ssh-keygen", ["-lf", `${hostKeyFile}.pub`]).split(" ")[1];
      writeFileSync(join(etc, "authorized_keys"), readFileSync(hostOpts.authorizedKey ?? `${clientKey}.pub`));
      let address = "127.0.0.1";
      let gateway = "127.0.0.1";
      let port: number;
      let netns: string | undefined;
      if (useNetns) {
        netns = `shx${tag}-${i}`;
        const veth = `vx${tag}-${i}`.slice(0, 15);
        const base = 4 * i;
        sh("ip", ["netns", "add", netns]);
        namespaces.push(netns);
        sh("ip", ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns]);
        sh("ip", ["addr", "add", `${net}.${base + 1}/30`, "dev", veth]);
        sh("ip", ["link", "set", veth, "up"]);
        sh("ip", ["netns", "exec", netns, "ip", "addr", "add", `${net}.${base + 2}/30`, "dev", "eth0"]);
        sh("ip", ["netns", "exec", netns, "ip", "link", "set", "eth0", "up"]);
        sh("ip", ["netns", "exec", netns, "ip", "link", "set", "lo", "up"]);
        address = `${net}.${base + 2}`;
        gateway = `${net}.${base + 1}`;
        port = 22;
      } else {
        port = await freePort();
      }
      const config = join(etc, "sshd_config");
      writeFileSync(
        config,
        [
          `Port ${port}`,
          `ListenAddress ${address}`,
          `HostKey ${hostKeyFile}`,
          `PidFile ${join(etc, "sshd.pid")}`,
          `AuthorizedKeysFile ${join(etc, "authorized_keys")}`,
          "StrictModes no",
          "UsePAM no",
          "PermitRootLogin prohibit-password",
          "PubkeyAuthentication yes",
          "PasswordAuthentication no",
          "KbdInteractiveAuthentication no",
          "Subsystem sftp internal-sftp",
          "MaxStartups 100",
          "MaxSessions 50",
          "LogLevel ERROR",
          "",
        ].join("\n"),
      );
      const host: SshHost = {
        name,
        address,
        port,
        root,
        user,
        home,
        agentPort: netns ? 7400 : await freePort(),
        gateway,
        hostKeyFile,
        fingerprint,
        knownHostsLine: `[${address}]:${port} ${readFileSync(`${hostKeyFile}.pub`, "utf8").split(" ").slice(0, 2).join(" ")}`,
        netns,
      };
      if (port === 22)
        host.knownHostsLine = `${address} ${readFileSync(`${hostKeyFile}.pub`, "utf8").split(" ").slice(0, 2).join(" ")}`;
      if (hostOpts.tmpfs) {
        const path = join(home, hostOpts.tmpfs.path);
        mkdirSync(path, { recursive: true });
        sh("mount", ["-t", "tmpfs", "-o", `size=${hostOpts.tmpfs.sizeKiB}k,mode=0755`, "tmpfs", path]);
        mounts.push(path);
        sh("chown", [`${user}:`, path]);
      }
      if (hostOpts.start !== false) {
        const argv = [SSHD, "-D", "-e", "-f", config];
        const child = netns
          ? spawn("ip", ["netns", "exec", netns, ...argv], { stdio: ["ignore", "ignore", "pipe"] })
          : spawn(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
        let stderr = "";
        child.stderr?.on("data", (b: Buffer) => (stderr += b.toString()));
        host.sshd = child;
        try {
          await waitListening(address, port);
        } catch (err) {
          throw new Error(`${(err as Error).message}: ${stderr}`);
        }
      }
      hosts.push(host);
      return host;
    },

    async cuttingProxy(host, cutAfterBytes) {
      let cut = false;
      const open = new Set<() => void>();
      const server = createServer((client) => {
        const upstream = createConnection({ host: host.address, port: host.port });
        sockets.add(client);
        sockets.add(upstream);
        let sent = 0;
        const kill = () => {
          open.delete(kill);
          client.destroy();
          upstream.destroy();
        };
        open.add(kill);
        client.on("data", (b: Buffer) => {
          sent += b.length;
          if (sent > cutAfterBytes) {
            cut = true;
            kill();
            return;
          }
          upstream.write(b);
        });
        upstream.on("data", (b: Buffer) => client.write(b));
        client.on("error", kill);
        upstream.on("error", kill);
        client.on("close", kill);
        upstream.on("close", kill);
      });
      proxies.push(server);
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
      return {
        port: (server.address() as AddressInfo).port,
        cut: () => cut,
        cutNow: () => {
          cut = true;
          for (const kill of [...open]) kill();
        },
      };
    },
    async startAgent() {
      const sock = join(dir, `agent-${agents.length}.sock`);
      const child = spawn("ssh-agent", ["-D", "-a", sock], { stdio: "ignore" });
      agents.push(child);
      for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(50);
      execFileSync("ssh-add", ["-q", clientKey], {
        env: { ...process.env, SSH_AUTH_SOCK: sock },
        stdio: "ignore",
      });
      return sock;
    },
    processesWith: pidsMentioning,
    async cleanup() {
      for (const s of sockets) s.destroy();
      for (const p of proxies) await new Promise<void>((resolve) => p.close(() => resolve()));
      // agents (and their supervisors) a deploy started: everything running out of the lab's directory
      for (const sig of ["SIGTERM", "SIGKILL"] as const) {
        const pids = pidsMentioning(dir);
        for (const pid of pids) {
          try {
            process.kill(pid, sig);
          } catch {
            // gone already
          }
        }
        if (pids.length && sig === "SIGTERM") await sleep(1500);
      }
      for (const a of agents) if (a.exitCode === null) a.kill("SIGTERM");
      for (const h of hosts) {
        if (h.sshd && h.sshd.exitCode === null) {
          h.sshd.kill("SIGTERM");
          await new Promise((resolve) => {
            const t = setTimeout(resolve, 2000);
            h.sshd!.once("exit", () => {
              clearTimeout(t);
              resolve(undefined);
            });
          });
        }
      }
      for (const ns of namespaces) {
        // anything still inside the namespace
        try {
          for (const pid of sh("ip", ["netns", "pids", ns]).split("\n").filter(Boolean))
            process.kill(Number(pid), "SIGKILL");
        } catch {
          // no such namespace or no pids
        }
      }
      for (const m of mounts.reverse()) {
        try {
          sh("umount", ["-l", m]);
        } catch {
          // not mounted
        }
      }
      for (const ns of namespaces) {
        try {
          sh("ip", ["netns", "del", ns]); // takes the veth pair with it
        } catch {
          // gone
        }
      }
      for (const u of users) {
        try {
          sh("userdel", [u]);
        } catch {
          // gone
        }
      }
      if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    },
  };
  return lab;
}

/** An inventory entry for a lab host (dataDir in the host user's home, unless given). */
export function inventoryNode(
  lab: SshLab,
  host: SshHost,
  id: string,
  zone: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    id,
    host: host.address,
    port: host.port,
    user: host.user,
    keyFile: lab.clientKey,
    zone,
    dataDir: `${host.home}/agent`,
    agentPort: host.agentPort,
    ...(lab.netns ? {} : { listen: `127.0.0.1:${host.agentPort}` }),
    ...extra,
  };
}

/** The environment and flags of `shardctl --store consul deploy …` run from the lab's control directory. */
export function consulDeployArgs(
  lab: SshLab,
  o: { token: string; consulAddr: string; prefix: string; inventory: string; bundle: string },
): { env: NodeJS.ProcessEnv; flags: string[] } {
  return {
    env: {
      SHARDCTL_TOKEN: o.token,
      SHARDCTL_DATA_DIR: join(lab.dir, "control"),
      CONSUL_HTTP_ADDR: o.consulAddr,
      SHARDCTL_CONSUL_PREFIX: o.prefix,
    },
    flags: [
      "--inventory",
      o.inventory,
      "--known-hosts",
      join(lab.dir, "known_hosts"),
      "--bundle",
      o.bundle,
      "--accept-new-host-keys",
    ],
  };
}
