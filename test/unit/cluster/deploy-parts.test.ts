/**
 * The pieces of deploy that need no SSH: tasks and rollback, bounded
 * parallelism, the remote scripts (run here with a real sh against a hostile
 * directory name), the probe parser, and the progress display.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  agentScript,
  ctlScript,
  installFingerprint,
  localHealthUrl,
  mapBounded,
  Mutex,
  nodeMajor,
  parseProbe,
  PROBE_SCRIPT,
  runTasks,
  superviseScript,
  systemdQuote,
  TaskError,
  unitFile,
  type AgentSettings,
  type Task,
} from "../../../src/cluster/deploy.js";
import { LocalExecutor } from "../../../src/cluster/ssh.js";
import { DeployProgress } from "../../../src/commands/deploy.js";

const local = new LocalExecutor();
let dir: string;
let hostile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-deploy-"));
  hostile = join(dir, "it's a $(touch pwned) `touch pwned` dir");
  mkdirSync(hostile, { recursive: true });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function settings(over: Partial<AgentSettings> = {}): AgentSettings {
  return {
    nodeId: "n1",
    zone: "a",
    listen: "127.0.0.1:7400",
    advertise: "10.0.0.1:7400",
    zones: ["a", "b"],
    segments: 64,
    dataDir: hostile,
    nodePath: process.execPath,
    mode: "process",
    ...over,
  };
}

describe("runTasks", () => {
  it("rolls back the tasks that ran, the failing one included, in reverse, and names the step", async () => {
    const log: string[] = [];
    const task = (name: string, fail = false): Task<null> => ({
      name,
      execute: async () => {
        log.push(`do ${name}`);
        if (fail) throw new Error(`${name} broke`);
      },
      rollback: async () => {
        log.push(`undo ${name}`);
      },
    });
    const steps: string[] = [];
    const err = await runTasks([task("a"), task("b"), task("c", true), task("d")], null, (s) =>
      steps.push(s),
    ).catch((e) => e);
    expect(err).toBeInstanceOf(TaskError);
    expect(err).toMatchObject({ step: "c", message: "c broke", rollbackErrors: [] });
    expect(log).toEqual(["do a", "do b", "do c", "undo c", "undo b", "undo a"]);
    expect(steps).toEqual(["a", "b", "c", "roll back: c", "roll back: b", "roll back: a"]);
  });

  it("keeps the first error and lists failed rollbacks beside it", async () => {
    const tasks: Task<null>[] = [
      {
        name: "a",
        execute: async () => {},
        rollback: async () => Promise.reject(new Error("cannot undo a")),
      },
      { name: "b", execute: async () => Promise.reject(new Error("b broke")) },
    ];
    const err = (await runTasks(tasks, null).catch((e) => e)) as TaskError;
    expect(err.message).toBe("b broke");
    expect(err.rollbackErrors).toEqual(["a: cannot undo a"]);
  });

  it("rolls back an inner group's tasks once, then the outer ones", async () => {
    const log: string[] = [];
    const t = (name: string, fail = false): Task<null> => ({
      name,
      execute: async () => {
        if (fail) throw new Error("no");
      },
      rollback: async () => {
        log.push(name);
      },
    });
    const group: Task<null> = { name: "group", execute: (c) => runTasks([t("in1"), t("in2", true)], c) };
    await runTasks([t("out1"), group], null).catch(() => {});
    expect(log).toEqual(["in2", "in1", "out1"]);
  });
});

describe("mapBounded and Mutex", () => {
  it("never runs more than the limit at once and keeps the input order", async () => {
    let running = 0;
    let peak = 0;
    const results = await mapBounded([5, 1, 4, 2, 3, 0], 2, async (ms, i) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, ms * 3));
      running--;
      if (i === 3) throw new Error("fourth fails");
      return i;
    });
    expect(peak).toBe(2);
    expect(results.map((r) => (r.status === "fulfilled" ? r.value : "x"))).toEqual([0, 1, 2, "x", 4, 5]);
  });

  it("runs one section at a time", async () => {
    const lock = new Mutex();
    const log: string[] = [];
    await Promise.all(
      [1, 2, 3].map((n) =>
        lock.run(async () => {
          log.push(`in ${n}`);
          await new Promise((r) => setTimeout(r, 5));
          log.push(`out ${n}`);
        }),
      ),
    );
    expect(log).toEqual(["in 1", "out 1", "in 2", "out 2", "in 3", "out 3"]);
  });
});

describe("LocalExecutor", () => {
  it("kills a command that outlives its timeout together with what it started, and does not wait for them", async () => {
    const tag = `${process.pid}${Date.now() % 100000}`;
    const ours = () =>
      readdirSync("/proc").filter((p) => {
        try {
          return /^\d+$/.test(p) && readFileSync(`/proc/${p}/cmdline`, "utf8").includes(tag);
        } catch {
          return false;
        }
      });
    try {
      const t0 = Date.now();
      const outcome = local
        .exec(["sh", "-c", `sleep 300.${tag}1 & sleep 300.${tag}2; wait`], { timeoutMs: 500 })
        .then(
          (r) => `finished: ${JSON.stringify(r)}`,
          (e: Error) => e.message,
        );
      const settled = await Promise.race([outcome, sleep(8000).then(() => "still waiting after 8 s")]);
      expect(settled).toMatch(/did not finish within 0\.5 s/);
      expect(Date.now() - t0).toBeLessThan(8000);
      for (let i = 0; i < 50 && ours().length; i++) await sleep(100);
      expect(ours()).toEqual([]);
    } finally {
      for (const pid of ours()) process.kill(Number(pid), "SIGKILL");
    }
  }, 20_000);
});

describe("the remote scripts", () => {
  it("are valid sh with a hostile directory name", async () => {
    for (const script of [agentScript(settings()), superviseScript(settings()), ctlScript(settings())]) {
      const r = await local.exec(["sh", "-n", "-c", script]);
      expect(r.code, r.stderr).toBe(0);
    }
  });

  it("start the agent with exactly the intended argv and environment", async () => {
    // a stand-in bundle that reports how it was started
    writeFileSync(
      join(hostile, "agent.mjs"),
      "console.log(JSON.stringify({ argv: process.argv.slice(2), zones: process.env.SHARDCTL_ZONES, token: process.env.SHARDCTL_TOKEN ?? null, cwd: process.cwd() }));",
    );
    writeFileSync(join(hostile, "agent.sh"), agentScript(settings()));
    const r = await local.exec(["sh", join(hostile, "agent.sh")], { stdin: "" });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      argv: [
        "--data-dir",
        `${hostile}/data`,
        "agent",
        "--listen",
        "127.0.0.1:7400",
        "--zone",
        "a",
        "--node-id",
        "n1",
        "--token-file",
        `${hostile}/token`,
        "--segments",
        "64",
      ],
      zones: "a,b",
      token: null,
      cwd: hostile,
    });
    expect(readFileSync(join(hostile, "agent.sh"), "utf8")).not.toMatch(/token [^-]/);
  });

  it("give the agent the Consul store (address, prefix, token file) only when deployed with it, and nothing from the login", async () => {
    writeFileSync(
      join(hostile, "agent.mjs"),
      "const e = process.env; console.log(JSON.stringify({ store: e.SHARDCTL_STORE ?? null, addr: e.CONSUL_HTTP_ADDR ?? null, prefix: e.SHARDCTL_CONSUL_PREFIX ?? null, token: e.CONSUL_HTTP_TOKEN ?? null, tokenFile: e.CONSUL_HTTP_TOKEN_FILE ?? null }));",
    );
    const env = {
      SHARDCTL_STORE: "consul",
      CONSUL_HTTP_ADDR: "10.9.9.9:8500",
      CONSUL_HTTP_TOKEN: "from-the-login",
      CONSUL_HTTP_TOKEN_FILE: "/tmp/elsewhere",
      SHARDCTL_CONSUL_PREFIX: "login/",
    };
    const runWith = async (s: AgentSettings) => {
      writeFileSync(join(hostile, "agent.sh"), agentScript(s));
      const r = await local.exec(
        ["env", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), "sh", join(hostile, "agent.sh")],
        {
          stdin: "",
        },
      );
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, string | null>;
    };
    // embedded: nothing of the login's Consul settings reaches the agent
    expect(await runWith(settings())).toEqual({
      store: null,
      addr: null,
      prefix: null,
      token: null,
      tokenFile: null,
    });
    // Consul: the deploy's settings, quoted; the token only as a file name, never in the script
    const hostileAddr = "http://consul.example:8500";
    const prefix = "it's $(x)/";
    expect(await runWith(settings({ consul: { addr: hostileAddr, prefix, tokenFile: true } }))).toEqual({
      store: "consul",
      addr: hostileAddr,
      prefix,
      token: null,
      tokenFile: `${hostile}/consul-token`,
    });
    expect(
      await runWith(settings({ consul: { addr: "127.0.0.1:8500", prefix: "p/", tokenFile: false } })),
    ).toMatchObject({
      store: "consul",
      tokenFile: null,
    });
    expect(() => readFileSync(join(dir, "pwned"))).toThrow();
  });

  it("report a stopped agent through ctl.sh status, and nothing ran from the name", async () => {
    writeFileSync(join(hostile, "ctl.sh"), ctlScript(settings()));
    const r = await local.exec(["sh", join(hostile, "ctl.sh"), "status"]);
    expect(r).toMatchObject({ code: 3, stdout: "stopped\n" });
    const bad = await local.exec(["sh", join(hostile, "ctl.sh"), "bogus"]);
    expect(bad.code).toBe(2);
    expect(() => readFileSync(join(dir, "pwned"))).toThrow();
    expect(() => readFileSync("pwned")).toThrow();
  });

  it("stop an agent whose ended supervisor nobody reaps (init reaps orphans late): stopped, not killed after the wait", async () => {
    // a subreaper that never waits: the supervisor ctl.sh detaches becomes its child, and a zombie when it ends
    const prctl = process.arch === "arm64" ? 167 : 157;
    const node = join(dir, "zombie node");
    mkdirSync(node, { recursive: true });
    const s = settings({ dataDir: node });
    writeFileSync(
      join(node, "agent.mjs"),
      "process.on('SIGTERM', () => process.exit(0)); setInterval(() => {}, 1000);",
    );
    writeFileSync(join(node, "agent.sh"), agentScript(s));
    writeFileSync(join(node, "supervise.sh"), superviseScript(s));
    writeFileSync(join(node, "ctl.sh"), ctlScript(s));
    const reaper = spawn(
      "perl",
      [
        "-e",
        `syscall(${prctl}, 36, 1) == 0 or die "prctl: $!"; system("sh", "$ARGV[0]/ctl.sh", "start") == 0 or die "start"; exec "sleep", "60"`,
        node,
      ],
      { stdio: "ignore", detached: true },
    );
    try {
      let pid: number | undefined;
      for (let i = 0; i < 100 && !pid; i++) {
        await sleep(50);
        const r = await local.exec(["sh", join(node, "ctl.sh"), "status"]);
        if (r.code === 0) pid = Number(readFileSync(join(node, "agent.pid"), "utf8"));
      }
      expect(pid).toBeGreaterThan(0);
      const t0 = Date.now();
      const r = await local.exec(["sh", join(node, "ctl.sh"), "stop", "4"]);
      expect(r).toMatchObject({ code: 0, stdout: "stopped\n" });
      expect(Date.now() - t0).toBeLessThan(3000);
      // it was left a zombie of the reaper: the case this is about
      expect(readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "")[0]).toBe("Z");
      expect(await local.exec(["sh", join(node, "ctl.sh"), "status"])).toMatchObject({
        code: 3,
        stdout: "stopped\n",
      });
    } finally {
      process.kill(-reaper.pid!, "SIGKILL");
    }
  }, 20_000);

  it("probe a directory that does not exist yet", async () => {
    const r = await local.exec(["sh", "-c", PROBE_SCRIPT, "sh", join(hostile, "not", "yet")]);
    const f = parseProbe(r.stdout);
    expect(f.nodePath).toBeTruthy();
    expect(nodeMajor(f.nodeVersion)).toBeGreaterThanOrEqual(20);
    expect(f.freeBytes).toBeGreaterThan(0);
    expect(f.running).toBe(false);
    expect(f.installedBundle).toBeUndefined();
  });

  it("probe the node id of an agent installed in the directory (its agent.json)", async () => {
    const dir = join(hostile, "installed-here");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "agent.json"), JSON.stringify({ nodeId: "n-7", zone: "a" }, null, 2) + "\n");
    const f = parseProbe((await local.exec(["sh", "-c", PROBE_SCRIPT, "sh", dir])).stdout);
    expect(f.installedNode).toBe("n-7");
  });

  it("quote values for a systemd unit", () => {
    expect(systemdQuote("/srv/a b/agent.sh")).toBe('"/srv/a b/agent.sh"');
    expect(systemdQuote('/srv/"q"\\%i$HOME')).toBe('"/srv/\\"q\\"\\\\%%i$$HOME"');
    expect(() => systemdQuote("/srv/a\nb")).toThrow();
    expect(unitFile(settings({ dataDir: "/srv/it's" }))).toContain(`ExecStart=/bin/sh "/srv/it's/agent.sh"`);
  });
});

describe("parseProbe and friends", () => {
  it("reads the probe's lines", () => {
    const f = parseProbe(
      [
        "node=/usr/bin/node",
        "nodeVersion=v20.11.1",
        "df=/dev/sda1 1000000 400000 600000 40% /",
        "systemd=1",
        "uid=0",
        "sha256sum=1",
        "timeout=1",
        "installed=abc def",
        "bundle=def",
        "running=1",
        `release=${"b".repeat(64)} 5000`,
        `release=${"a".repeat(64)} 4000`,
        "release=not-ours 12",
        `release=${"c".repeat(64)} garbage`,
        `cutover=${"a".repeat(64)} ${"b".repeat(64)}`,
        "prev=1",
        "heldShards=4",
      ].join("\n"),
    );
    expect(f).toEqual({
      nodePath: "/usr/bin/node",
      nodeVersion: "v20.11.1",
      freeBytes: 600000 * 1024,
      systemd: true,
      uid: 0,
      hasSha256sum: true,
      hasTimeout: true,
      installedFingerprint: "abc",
      installedBundle: "def",
      bundleOnDisk: "def",
      running: true,
      // newest first, as listed; names deploy did not give are not releases
      releases: [
        { sha256: "b".repeat(64), bytes: 5000 },
        { sha256: "a".repeat(64), bytes: 4000 },
      ],
      cutover: { from: "a".repeat(64), to: "b".repeat(64) },
      prev: true,
      prevUnit: false,
      heldShards: 4,
    });
    expect(parseProbe("node=\nsystemd=0\nrunning=0\n")).toMatchObject({
      heldShards: 0,
      nodePath: undefined,
      freeBytes: undefined,
      systemd: false,
      running: false,
      hasTimeout: false,
      releases: [],
      cutover: undefined,
      prev: false,
    });
  });

  it("reads Node.js major versions", () => {
    expect(nodeMajor("v20.1.0")).toBe(20);
    expect(nodeMajor("v18.19.0")).toBe(18);
    expect(nodeMajor("garbage")).toBeUndefined();
    expect(nodeMajor(undefined)).toBeUndefined();
  });

  it("asks a wildcard listener on loopback", () => {
    expect(localHealthUrl("0.0.0.0:7400")).toBe("http://127.0.0.1:7400/health");
    expect(localHealthUrl("[::]:7400")).toBe("http://[::1]:7400/health");
    expect(localHealthUrl("10.0.0.5:7401")).toBe("http://10.0.0.5:7401/health");
  });

  it("fingerprints an install by bundle, files and token (without holding the token)", () => {
    const files = new Map([["agent.json", { content: "{}", mode: 0o600 }]]);
    const a = installFingerprint("sha", files, "token-1");
    expect(installFingerprint("sha", files, "token-1")).toBe(a);
    expect(installFingerprint("sha2", files, "token-1")).not.toBe(a);
    expect(installFingerprint("sha", files, "token-2")).not.toBe(a);
    expect(
      installFingerprint("sha", new Map([["agent.json", { content: "{ }", mode: 0o600 }]]), "token-1"),
    ).not.toBe(a);
    expect(a).not.toContain("token-1");
    // a new Consul token is a new install too
    const withConsul = (t: string) =>
      installFingerprint(
        "sha",
        new Map([...files, ["consul-token", { content: t, mode: 0o600 }]]),
        "token-1",
      );
    expect(withConsul("c1\n")).toBe(withConsul("c1\n"));
    expect(withConsul("c1\n")).not.toBe(withConsul("c2\n"));
  });
});

class Collect extends Writable {
  text = "";
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.text += chunk.toString();
    cb();
  }
}

describe("DeployProgress", () => {
  it("prints plain lines per step when not a terminal, without upload percentages", () => {
    const out = new Collect();
    const p = new DeployProgress(out, ["n1", "node-22"], false);
    p.update("n1", { step: "connect" });
    p.update("n1", { step: "upload bundle", percent: 40 });
    p.update("n1", { step: "upload bundle", percent: 100 });
    p.update("node-22", { step: "connect", final: "failed", detail: "connection refused" });
    p.finish();
    expect(out.text).toBe(
      "n1       connect\nn1       upload bundle 100%\nnode-22  FAILED at connect: connection refused\n",
    );
  });

  it("redraws one line per node in place on a terminal, then stays out of the way", async () => {
    const out = new Collect();
    const p = new DeployProgress(out, ["n1", "n2"], true);
    p.update("n1", { step: "upload bundle", percent: 40 });
    await new Promise((r) => setTimeout(r, 150)); // the redraw is throttled
    p.update("n2", { step: "installed", final: "installed" });
    p.finish();
    p.finish();
    const frames = out.text.split("\x1b[2A");
    expect(frames).toHaveLength(2);
    expect(frames[0]).toBe("\x1b[2Kn1    upload bundle 40%\n\x1b[2Kn2    waiting\n");
    expect(frames[1]).toBe("\x1b[2Kn1    upload bundle 40%\n\x1b[2Kn2    installed\n");
    p.update("n1", { step: "upload bundle", percent: 100 });
    expect(out.text.endsWith("n1    upload bundle 100%\n")).toBe(true);
  });
});
