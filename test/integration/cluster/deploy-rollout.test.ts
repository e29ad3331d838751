/**
 * The whole per-node pipeline of deploy (probe, stage, swap, start, health,
 * rollback, registration) run against this machine through LocalExecutor —
 * the same remote scripts a node runs over SSH, with the real agent bundle
 * (built from this checkout) as the release that works. What is checked here is the
 * cluster-level behaviour: a rolling upgrade stops at the first node whose new
 * agent does not come up, and a first deploy that fails on some nodes does not
 * write the initial layout over the others; also the releases each node keeps
 * and `rollback` to them, ctl.sh's start after a stop that ended half way, and
 * `node start|restart` refusing a node whose cut-over was interrupted.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_NODE_FLAGS } from "../../../src/agent/node-flags.js";
import { buildBundle, type Bundle } from "../../../src/cluster/bundle.js";
import {
  CUTOVER_MARKER,
  runDeploy,
  runNodeControl,
  type ConnectNode,
  type DeployOptions,
} from "../../../src/cluster/deploy.js";
import type { InventoryNode } from "../../../src/cluster/inventory.js";
import { LocalExecutor } from "../../../src/cluster/ssh.js";
import { ExitCode, PreconditionError } from "../../../src/errors.js";
import { EmbeddedStore, processAlive } from "../../../src/store/embedded.js";
import { freePorts } from "../../helpers/ports.js";

const TOKEN = "rollout-token-" + "0a1b2c3d".repeat(4);

/** `code` run first in a bundle (after its #! line, which must stay the first). */
function withPrologue(bundle: string, code: string): string {
  const eol = bundle.startsWith("#!") ? bundle.indexOf("\n") + 1 : 0;
  return bundle.slice(0, eol) + code + bundle.slice(eol);
}

/** A release that cannot start. */
const BAD_AGENT = `console.error("release 2: cannot open the data directory"); process.exit(1);\n`;

let dir: string;
/** The real agent bundle's text: the release that works. */
let agentText: string;

function makeBundle(name: string, text: string): Bundle {
  const path = join(dir, name);
  writeFileSync(path, text);
  return { path, sha256: createHash("sha256").update(text).digest("hex"), bytes: Buffer.byteLength(text) };
}

async function makeNodes(prefix: string, n: number): Promise<InventoryNode[]> {
  const ports = await freePorts(n);
  return ports.map((p, i) => ({
    id: `${prefix}${i + 1}`,
    host: "127.0.0.1",
    port: 22,
    user: "local",
    zone: ["a", "b", "c"][i % 3],
    capacity: { shards: 64 },
    dataDir: join(dir, `${prefix}${i + 1} it's $(touch pwned)`),
    agentPort: p,
    listen: `127.0.0.1:${p}`,
    advertise: `127.0.0.1:${p}`,
  }));
}

const local: ConnectNode = async () => new LocalExecutor();

function options(
  nodes: InventoryNode[],
  bundle: Bundle | undefined,
  over: Partial<DeployOptions> = {},
): DeployOptions {
  return {
    nodes,
    bundle,
    token: TOKEN,
    zones: ["a", "b", "c"],
    segments: 64,
    concurrency: nodes.length,
    hostKeys: { knownHostsFile: join(dir, "known_hosts"), acceptNew: false },
    healthTimeoutMs: 20_000,
    stopTimeoutSeconds: 5,
    ...over,
  };
}

function pidOf(node: InventoryNode): number | undefined {
  const f = join(node.dataDir, "agent.pid");
  return existsSync(f) ? Number(readFileSync(f, "utf8").trim()) : undefined;
}

function alive(pid: number | undefined): boolean {
  return pid !== undefined && pid > 0 && processAlive(pid);
}

function sha256Of(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Processes whose command line mentions the test directory (the supervisors and agents). */
function ours(): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(dir)) out.push(Number(entry));
    } catch {
      // gone
    }
  }
  return out;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-rollout-"));
  agentText = readFileSync((await buildBundle(join(dir, "bundle", "agent.mjs"))).path, "utf8");
}, 120_000);

afterAll(async () => {
  for (const sig of ["SIGTERM", "SIGKILL"] as const) {
    for (const pid of ours()) {
      try {
        process.kill(pid, sig);
      } catch {
        // gone
      }
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  rmSync(dir, { recursive: true, force: true });
});

describe("a rolling upgrade", () => {
  it("stops at the first node whose new agent does not come up: that node gets its old agent back, the others are not touched", async () => {
    const v1 = makeBundle("agent-v1.mjs", agentText);
    const v2 = makeBundle("agent-v2.mjs", BAD_AGENT);
    const nodes = await makeNodes("r", 3);
    const store = new EmbeddedStore(join(dir, "control-rolling"));
    try {
      const first = await runDeploy(options(nodes, v1), { store, connect: local });
      expect(first.nodes.map((n) => n.outcome)).toEqual(["installed", "installed", "installed"]);
      const pids = nodes.map(pidOf);
      for (const p of pids) expect(alive(p)).toBe(true);

      const order: string[] = [];
      const upgrade = await runDeploy(options(nodes, v2), {
        store,
        connect: local,
        progress: (id, e) => {
          if (e.step === "stop (drain)") order.push(id);
        },
      });
      // exactly one node was stopped and tried with the bad release
      expect(order).toHaveLength(1);
      const tried = upgrade.nodes.find((n) => n.id === order[0])!;
      expect(tried).toMatchObject({ outcome: "failed", step: "wait for health" });
      expect(tried.error).toMatch(/release 2: cannot open the data directory/);
      expect(tried.rollbackErrors).toBeUndefined();
      expect(tried.hint).toMatch(/rolling upgrade stopped/);
      for (const n of upgrade.nodes.filter((r) => r.id !== tried.id)) {
        expect(n).toMatchObject({ outcome: "failed", step: "rolling upgrade halted" });
        expect(n.error).toContain(`${tried.id}`);
        expect(n.error).toMatch(/still runs the version it had/);
      }
      for (const [i, node] of nodes.entries()) {
        // every node runs the previous release, and the untouched ones were never restarted
        expect(sha256Of(join(node.dataDir, "agent.mjs"))).toBe(v1.sha256);
        expect(alive(pidOf(node))).toBe(true);
        if (node.id !== tried.id) expect(pidOf(node)).toBe(pids[i]);
        expect(existsSync(join(node.dataDir, ".staging"))).toBe(false);
        expect(existsSync(join(node.dataDir, ".prev"))).toBe(false);
      }
      // the location map is as before
      expect((await store.load())?.map.nodes.map((n) => n.id)).toEqual(["r1", "r2", "r3"]);
    } finally {
      await store.close();
    }
    expect(existsSync(join(dir, "pwned"))).toBe(false);
  }, 180_000);

  it("says which nodes already run the new release and how to roll them back", async () => {
    const v1 = makeBundle("agent-s1.mjs", agentText);
    // release 2 starts, except where the node's directory holds a marker
    const v2 = makeBundle(
      "agent-s2.mjs",
      withPrologue(
        agentText,
        `import { existsSync as __refused } from "node:fs";\nif (__refused("refuse-release-2")) { console.error("release 2: refused here"); process.exit(1); }\n`,
      ),
    );
    const nodes = await makeNodes("s", 3);
    const store = new EmbeddedStore(join(dir, "control-partial"));
    try {
      const first = await runDeploy(options(nodes, v1, { concurrency: 1 }), { store, connect: local });
      expect(first.nodes.map((n) => n.outcome)).toEqual(["installed", "installed", "installed"]);
      const s3pid = pidOf(nodes[2]);
      writeFileSync(join(nodes[1].dataDir, "refuse-release-2"), "");
      // one at a time, in inventory order: s1 upgraded, s2 fails, s3 waits — and is left alone
      const r = await runDeploy(options(nodes, v2, { concurrency: 1 }), { store, connect: local });
      expect(r.nodes.map((n) => [n.id, n.outcome, n.step])).toEqual([
        ["s1", "upgraded", undefined],
        ["s2", "failed", "wait for health"],
        ["s3", "failed", "rolling upgrade halted"],
      ]);
      expect(r.nodes[1].hint).toContain("the rolling upgrade stopped at s2");
      expect(r.nodes[1].hint).toContain("s1 already run the new bundle");
      expect(r.nodes[1].hint).toContain("shardctl deploy --rollback --nodes s1");
      expect(r.nodes[1].hint).toContain(v1.sha256);
      expect(r.nodes[2].hint).toMatch(/fix what made s2 fail, then run the same deploy again/);
      expect(sha256Of(join(nodes[0].dataDir, "agent.mjs"))).toBe(v2.sha256);
      expect(sha256Of(join(nodes[1].dataDir, "agent.mjs"))).toBe(v1.sha256);
      expect(sha256Of(join(nodes[2].dataDir, "agent.mjs"))).toBe(v1.sha256);
      expect(pidOf(nodes[2])).toBe(s3pid);
      for (const node of nodes) expect(alive(pidOf(node))).toBe(true);
      // the hint's rollback: s1 gets back the release it ran before, kept on it
      const back = await runDeploy(options([nodes[0]], undefined, { rollback: true }), {
        store,
        connect: local,
      });
      expect(back.nodes[0]).toMatchObject({ outcome: "rolled-back", bundleSha256: v1.sha256 });
      expect(sha256Of(join(nodes[0].dataDir, "agent.mjs"))).toBe(v1.sha256);
      expect(alive(pidOf(nodes[0]))).toBe(true);
    } finally {
      await store.close();
    }
  }, 180_000);
});

describe("kept releases", () => {
  /** The bundles kept on a node, by sha256. */
  function kept(node: InventoryNode): string[] {
    const d = join(node.dataDir, "releases");
    return existsSync(d)
      ? readdirSync(d)
          .map((f) => f.replace(/\.mjs$/, ""))
          .sort()
      : [];
  }

  it("keeps the releases a node ran before (2 by default), prunes older ones, and rolls back to the newest kept one", async () => {
    const releases = [1, 2, 3, 4].map((i) =>
      makeBundle(`agent-k${i}.mjs`, `${agentText}\n// release ${i}\n`),
    );
    const [node] = await makeNodes("k", 1);
    const store = new EmbeddedStore(join(dir, "control-kept"));
    try {
      for (const b of releases) {
        const r = await runDeploy(options([node], b), { store, connect: local });
        expect(r.nodes[0].outcome, r.nodes[0].error).toMatch(/installed|upgraded/);
      }
      // release 4 runs; 3 and 2 are kept, 1 was pruned
      expect(sha256Of(join(node.dataDir, "agent.mjs"))).toBe(releases[3].sha256);
      expect(kept(node)).toEqual([releases[1].sha256, releases[2].sha256].sort());
      for (const sha of kept(node)) expect(sha256Of(join(node.dataDir, "releases", `${sha}.mjs`))).toBe(sha);

      // a rollback needs no bundle from here: it installs the newest kept release, one node at a time
      const pid = pidOf(node);
      const back = await runDeploy(options([node], undefined, { rollback: true }), { store, connect: local });
      expect(back.nodes[0]).toMatchObject({ outcome: "rolled-back", bundleSha256: releases[2].sha256 });
      expect(sha256Of(join(node.dataDir, "agent.mjs"))).toBe(releases[2].sha256);
      expect(alive(pidOf(node))).toBe(true);
      expect(pidOf(node)).not.toBe(pid);
      // what it replaced is kept in its turn
      expect(kept(node)).toEqual([releases[1].sha256, releases[3].sha256].sort());
      // keepReleases: 1 keeps only the newest of them
      const one = await runDeploy(options([node], releases[0], { keepReleases: 1 }), {
        store,
        connect: local,
      });
      expect(one.nodes[0].outcome).toBe("upgraded");
      expect(kept(node)).toEqual([releases[2].sha256]);
    } finally {
      await store.close();
    }
  }, 180_000);

  it("refuses to roll back a node that keeps no earlier release, and changes nothing there", async () => {
    const b = makeBundle("agent-only.mjs", `${agentText}\n// the only release\n`);
    const [node] = await makeNodes("o", 1);
    const store = new EmbeddedStore(join(dir, "control-only"));
    try {
      expect((await runDeploy(options([node], b), { store, connect: local })).nodes[0].outcome).toBe(
        "installed",
      );
      const pid = pidOf(node);
      const r = await runDeploy(options([node], undefined, { rollback: true }), { store, connect: local });
      expect(r.nodes[0]).toMatchObject({ outcome: "failed", step: "find the previous release" });
      expect(r.nodes[0].error).toMatch(/no earlier release is kept on o1/);
      expect(r.nodes[0].hint).toMatch(/--bundle/);
      expect(pidOf(node)).toBe(pid);
      expect(sha256Of(join(node.dataDir, "agent.mjs"))).toBe(b.sha256);
    } finally {
      await store.close();
    }
  }, 120_000);
});

describe("ctl.sh on a node", () => {
  it("starts a new agent after a stop that did not finish (its caller went away) once the old agent is gone, instead of reporting it as running", async () => {
    const b = makeBundle("agent-ctl.mjs", `${agentText}\n// ctl\n`);
    const [node] = await makeNodes("c", 1);
    const store = new EmbeddedStore(join(dir, "control-ctl"));
    const ctl = join(node.dataDir, "ctl.sh");
    const sh = new LocalExecutor();
    let agentPid: number | undefined;
    try {
      expect((await runDeploy(options([node], b), { store, connect: local })).nodes[0].outcome).toBe(
        "installed",
      );
      const supervisor = pidOf(node)!;
      agentPid = ours().find((p) =>
        readFileSync(`/proc/${p}/cmdline`, "utf8").startsWith(
          [process.execPath, ...AGENT_NODE_FLAGS, `${node.dataDir}/agent.mjs`].join("\0"),
        ),
      );
      expect(agentPid).toBeGreaterThan(0);
      // an agent slow to drain: it takes the SIGTERM only once it is continued
      process.kill(agentPid!, "SIGSTOP");
      // a stop whose caller went away half way (a dropped connection: its command is killed on the node)
      const stop = await sh.exec(["sh", ctl, "stop", "30"], { timeoutMs: 1000 }).catch((e: Error) => e);
      expect(stop).toBeInstanceOf(Error);
      expect(alive(supervisor)).toBe(true);
      // the rollback's start, while the old agent still drains
      const start = sh.exec(["sh", ctl, "start"], { timeoutMs: 60_000 });
      await new Promise((r) => setTimeout(r, 1000));
      process.kill(agentPid!, "SIGCONT");
      const r = await start;
      expect(r.code, r.stderr).toBe(0);
      // the old supervisor is gone; a new one runs, with an agent that answers
      for (let i = 0; i < 100 && alive(supervisor); i++) await new Promise((r) => setTimeout(r, 100));
      expect(alive(supervisor)).toBe(false);
      const now = pidOf(node);
      expect(now).not.toBe(supervisor);
      expect(alive(now)).toBe(true);
      let status = 0;
      for (let i = 0; i < 80 && status !== 200; i++) {
        status = await fetch(`http://${node.listen}/health`).then(
          (res) => res.status,
          () => 0,
        );
        if (status !== 200) await new Promise((r) => setTimeout(r, 250));
      }
      expect(status).toBe(200);
      expect((await sh.exec(["sh", ctl, "status"])).stdout).toMatch(/^running/);
    } finally {
      if (agentPid) {
        try {
          process.kill(agentPid, "SIGCONT");
        } catch {
          // gone
        }
      }
      await store.close();
    }
  }, 120_000);
});

describe("node start|restart on a node whose cut-over was interrupted", () => {
  /** `shardctl node ACTION` on a node, run here (LocalExecutor) as deploy ran it. */
  const control = (action: "start" | "stop" | "restart" | "status", node: InventoryNode) =>
    runNodeControl(
      action,
      node,
      { hostKeys: options([], undefined).hostKeys, healthTimeoutMs: 20_000 },
      {
        connect: local,
      },
    );

  async function refusal(action: "start" | "restart", node: InventoryNode): Promise<PreconditionError> {
    const err: unknown = await control(action, node).then(
      () => new Error(`node ${action} was not refused`),
      (e: unknown) => e,
    );
    expect(err, String(err)).toBeInstanceOf(PreconditionError);
    expect((err as PreconditionError).exitCode).toBe(ExitCode.Precondition);
    return err as PreconditionError;
  }

  /** Every supervisor or agent process of the node (whatever agent.pid says). */
  const processesOf = (node: InventoryNode) =>
    ours().filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(`${node.dataDir}/`);
      } catch {
        return false;
      }
    });

  it("refuses to start the half-swapped node a failed cut-over left, saying from which release to which and what to run; stop and status still work", async () => {
    // Given release 1 running; it starts again only while the node has no "refuse-restart" file
    const v1 = makeBundle(
      "agent-i1.mjs",
      withPrologue(
        agentText,
        `import { existsSync as __refused } from "node:fs";\nif (__refused("refuse-restart")) { console.error("release 1: refused here"); process.exit(0); }\n`,
      ),
    );
    const v2 = makeBundle("agent-i2.mjs", `console.error("release 2: cannot start"); process.exit(0);\n`);
    const [node] = await makeNodes("i", 1);
    const store = new EmbeddedStore(join(dir, "control-interrupted"));
    try {
      const opts = { healthTimeoutMs: 5_000 };
      expect((await runDeploy(options([node], v1, opts), { store, connect: local })).nodes[0].outcome).toBe(
        "installed",
      );
      // When the cut-over to release 2 fails and so does the restart of release 1: the deploy cannot
      // bring any agent back, and leaves the node stopped, with its marker
      writeFileSync(join(node.dataDir, "refuse-restart"), "");
      const r = await runDeploy(options([node], v2, opts), { store, connect: local });
      expect(r.nodes[0]).toMatchObject({ outcome: "failed" });
      expect(r.nodes[0].rollbackErrors?.join("\n")).toMatch(/exited/);
      expect(readFileSync(join(node.dataDir, CUTOVER_MARKER), "utf8")).toBe(`${v1.sha256} ${v2.sha256}\n`);
      for (let i = 0; i < 100 && processesOf(node).length > 0; i++)
        await new Promise((r) => setTimeout(r, 100));
      expect(processesOf(node)).toEqual([]);
      // the reason is gone, so a start would now run whatever is in place
      rmSync(join(node.dataDir, "refuse-restart"));

      // Then node start and node restart refuse, name both releases and the way out, and start nothing
      for (const action of ["start", "restart"] as const) {
        const err = await refusal(action, node);
        expect(err.message).toContain(
          `a deploy was interrupted during the cut-over from release ${v1.sha256.slice(0, 12)} to release ${v2.sha256.slice(0, 12)} on ${node.id}`,
        );
        expect(err.hint).toMatch(
          new RegExp(
            `shardctl deploy. again: it finishes the cut-over, or repairs the node back to the release it ran before it \\(${v1.sha256.slice(0, 12)}\\)`,
          ),
        );
        // not "--rollback to go back to the release before": a rollback repairs first, then goes back one more
        expect(err.hint).toContain(
          "`deploy --rollback` too repairs it first, then goes back one release more",
        );
        expect(processesOf(node)).toEqual([]);
      }
      // a stop is always safe; status says the agent is stopped and why a start is refused
      expect((await control("stop", node)).output).toBe("not running");
      const status = await control("status", node);
      expect(status.output).toMatch(/^stopped\n.*interrupted during the cut-over from release/);
      expect(status.cutover).toEqual({ from: v1.sha256, to: v2.sha256 });
      expect(existsSync(join(node.dataDir, CUTOVER_MARKER))).toBe(true);

      // and once a deploy has repaired the node, start and restart work again
      const again = await runDeploy(options([node], v1, opts), { store, connect: local });
      expect(again.nodes[0].repaired, JSON.stringify(again.nodes[0])).toMatch(/interrupted cut-over/);
      expect(existsSync(join(node.dataDir, CUTOVER_MARKER))).toBe(false);
      expect((await control("restart", node)).output).toMatch(/healthy$/);
      expect(alive(pidOf(node))).toBe(true);
    } finally {
      await store.close();
    }
  }, 120_000);

  it("refuses a marker with garbage in it just as clearly, without stopping the agent that runs", async () => {
    const b = makeBundle("agent-g.mjs", `${agentText}\n// garbage marker\n`);
    const [node] = await makeNodes("g", 1);
    const store = new EmbeddedStore(join(dir, "control-garbage"));
    try {
      expect((await runDeploy(options([node], b), { store, connect: local })).nodes[0].outcome).toBe(
        "installed",
      );
      const pid = pidOf(node);
      const marker = join(node.dataDir, CUTOVER_MARKER);
      for (const garbage of [
        Buffer.from("\x1b[31mnot a release\x07 $(touch pwned) `id`\x00\xff\xfe"),
        Buffer.from("x".repeat(100_000)),
        Buffer.alloc(0),
      ]) {
        writeFileSync(marker, garbage);
        const err = await refusal("restart", node);
        expect(err.message).toContain(`a deploy was interrupted during a cut-over on ${node.id}`);
        expect(err.message).toContain(marker);
        // nothing of the marker is echoed: no escape sequence, no 100 kB line
        expect([...err.message].filter((c) => c < " " || c === "\x7f")).toEqual([]);
        expect(err.message).not.toMatch(/not a release|xxxxxxxx/);
        expect(err.hint).toContain("run the same `shardctl deploy` again");
        // the restart stopped nothing
        expect(pidOf(node)).toBe(pid);
        expect(alive(pid)).toBe(true);
        const status = await control("status", node);
        expect(status.output).toMatch(/^running.*\n.*interrupted during a cut-over/);
      }
      expect((await control("stop", node)).output).toMatch(/stopped/);
      await refusal("start", node);
      expect(processesOf(node)).toEqual([]);
    } finally {
      await store.close();
    }
    expect(existsSync(join(dir, "pwned"))).toBe(false);
  }, 120_000);
});

describe("a first deploy that fails on some nodes", () => {
  it("does not write the initial layout over the others; the re-run that reaches every node does", async () => {
    const v1 = makeBundle("agent-first.mjs", agentText);
    const nodes = await makeNodes("f", 3);
    const store = new EmbeddedStore(join(dir, "control-first"));
    let f3Down = true;
    const connect: ConnectNode = async (node) => {
      if (node.id === "f3" && f3Down) throw new Error("cannot connect to local@f3:22: connection refused");
      return new LocalExecutor();
    };
    const logs: string[] = [];
    try {
      const r = await runDeploy(options(nodes, v1), { store, connect, log: (m) => logs.push(m) });
      expect(r.nodes.map((n) => n.outcome)).toEqual(["installed", "installed", "failed"]);
      expect(r.layoutWritten).toBe(false);
      expect(r.registered).toEqual([]);
      expect(await store.load()).toBeNull();
      expect(r.warnings.join("\n")).toMatch(/no initial layout written: f3 failed/);
      expect(logs.join("\n")).toMatch(/run the same deploy again/);

      f3Down = false;
      const again = await runDeploy(options(nodes, v1), { store, connect });
      expect(again.nodes.map((n) => n.outcome)).toEqual(["up-to-date", "up-to-date", "installed"]);
      expect(again.layoutWritten).toBe(true);
      const vm = await store.load();
      for (const id of ["f1", "f2", "f3"])
        expect(vm!.map.shards.filter((s) => s.node === id)).toHaveLength(4);
    } finally {
      await store.close();
    }
  }, 180_000);
});
