/**
 * Live migration (issue 8) with real agents (`shardctl up --local`) and the
 * embedded store: a move under a steady writer, the abort paths (wrong
 * checksum, refused commit, target refuses), the replication endpoints'
 * hostile input, a node that is not in the map and a stale plan file.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ShardClient } from "../../../src/client/shard-client.js";
import { AgentRpc } from "../../../src/cluster/agent-rpc.js";
import { executeMigration, listMigrations } from "../../../src/cluster/migrate.js";
import type { LocationMap } from "../../../src/engine/location-map.js";
import { systemClock } from "../../../src/engine/ports.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { encodeEntry } from "../../../src/agent/log-format.js";
import { cliArgs, freePort, http } from "../agent/harness.js";
import { readMapFile, localClusterSuite } from "./local-fixture.js";
import { shardctlCommand } from "../../helpers/cli.js";

const cluster = localClusterSuite("migrate");
const { env, cli } = cluster;

function readMap(): { version: number; map: LocationMap } {
  return readMapFile(cluster.dir);
}

function addressOf(node: string): string {
  return readMap().map.nodes.find((n) => n.id === node)!.address;
}

function portOf(node: string): number {
  return Number(addressOf(node).split(":")[1]);
}

/** A shard and a node that does not hold it. */
function pickMove(shardIndex: number): { shard: string; source: string; target: string; epoch: number } {
  const m = readMap().map;
  const s = m.shards[shardIndex];
  const target = m.nodes.find((n) => n.id !== s.node)!.id;
  return { shard: s.id, source: s.node, target, epoch: s.epoch };
}

/** An HTTP request to an agent with the cluster's token. */
function api(port: number, method: string, path: string, opts: Parameters<typeof http>[3] = {}) {
  return http(port, method, path, { token: cluster.token, ...opts });
}

function client(): ShardClient {
  return new ShardClient({
    store: new EmbeddedStore(cluster.dir),
    token: cluster.token,
    deadlineMs: 20_000,
    baseBackoffMs: 5,
  });
}

/** Writes unique values until stopped; remembers every acknowledged write. */
function startWriter(c: ShardClient, prefix: string, pad = 50) {
  const acked = new Map<string, string>();
  let stop = false;
  let errors = 0;
  const done = (async () => {
    for (let i = 0; !stop; i++) {
      const key = `${prefix}-${i}`;
      const value = `${prefix}-value-${i}-${"x".repeat(i % pad)}`;
      try {
        await c.put(key, value);
        acked.set(key, value);
      } catch {
        errors++;
      }
    }
  })();
  return {
    acked,
    errors: () => errors,
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

describe("migrate", () => {
  it("moves a shard with its data while a writer keeps writing; every acknowledged write survives", async () => {
    const c = client();
    const pre = startWriter(c, "pre", 4000);
    while (pre.acked.size < 400) await new Promise((r) => setTimeout(r, 20));
    await pre.stop();
    const mv = pickMove(0);
    const writer = startWriter(c, "live");
    while (writer.acked.size < 50) await new Promise((r) => setTimeout(r, 10));
    const before = readMap();
    const r = await cli("migrate", "--shard", mv.shard, "--to", mv.target, "--apply", "--json");
    expect(r.code, r.err).toBe(0);
    const fencedLsn = JSON.parse(r.out).migrations[0].fencedLsn as number;
    // keep writing until the new owner has taken writes after the cutover
    const targetLsn = async () =>
      (await api(portOf(mv.target), "GET", `/v1/shards/${mv.shard}`)).json().lsn as number;
    for (let i = 0; i < 200 && (await targetLsn()) <= fencedLsn; i++)
      await new Promise((res) => setTimeout(res, 25));
    await writer.stop();
    expect(await targetLsn()).toBeGreaterThan(fencedLsn);
    expect(r.err).toMatch(/committed/);
    const result = JSON.parse(r.out);
    expect(result.migrations).toHaveLength(1);
    const rec = result.migrations[0];
    process.stderr.write(
      `migration: ${rec.entriesCopied} entries, ${rec.bytesCopied} bytes, ${rec.rounds} rounds, write pause ${rec.writePauseMs} ms, phases ${JSON.stringify(rec.phaseMs)}\n`,
    );
    expect(rec.phase).toBe("done");
    expect(rec.bytesCopied).toBeGreaterThan(0);
    // the access history moved with the data: the target has the windows of the written segments
    expect(rec.windowsCopied).toBeGreaterThan(0);
    const s0 = readMap().map.shards.find((s) => s.id === mv.shard)!.ranges[0][0];
    const onTarget = await api(portOf(mv.target), "GET", `/v1/access/${s0}/export`);
    const onSource = await api(portOf(mv.source), "GET", `/v1/access/${s0}/export`);
    expect(onTarget.status).toBe(onSource.status);
    // hostile window imports are refused
    const put = (seg: string, body: unknown) =>
      api(portOf(mv.target), "PUT", `/v1/admin/access/${seg}`, {
        body: JSON.stringify(body),
        headers: { "content-type": "application/json" },
      });
    expect((await put("99999", { segment: 99999 })).status).toBe(400);
    expect((await put("x", {})).status).toBe(400);
    expect((await put(String(s0), { segment: s0 + 1 })).status).toBe(400);
    expect(
      (await put(String(s0), { segment: s0, zones: ["q"], levels: [], cells: [], stamps: [] })).status,
    ).toBe(400);
    expect(rec.writePauseMs).toBeGreaterThanOrEqual(0);
    expect(rec.writePauseMs).toBeLessThan(5000);
    // the map: the target at epoch + 1, stamped
    const after = readMap();
    const s = after.map.shards.find((x) => x.id === mv.shard)!;
    expect(s.node).toBe(mv.target);
    expect(s.epoch).toBe(mv.epoch + 1);
    expect(s.migrationTimestamp).toBeGreaterThan(
      before.map.shards.find((x) => x.id === mv.shard)!.migrationTimestamp,
    );
    // every acknowledged write readable through the routing client (fresh client: the new map)
    expect(writer.errors()).toBe(0);
    const reader = client();
    for (const [k, v] of [...pre.acked, ...writer.acked]) {
      const got = await reader.get(k);
      expect(got?.value.toString(), k).toBe(v);
    }
    reader.close();
    c.close();
    // the old owner redirects to the new one
    const inv = await api(portOf(mv.target), "GET", `/v1/shards/${mv.shard}`);
    expect(inv.json()).toMatchObject({ state: "owned", epoch: mv.epoch + 1 });
    const keys = inv.json().keys as number;
    expect(keys).toBeGreaterThan(0);
    const old = await api(portOf(mv.source), "PUT", `/v1/shards/${mv.shard}/keys/zz`, {
      body: "x",
      headers: { "x-shard-epoch": String(mv.epoch) },
    });
    expect(old.status).toBe(421);
    expect(old.json().redirect).toEqual({
      node: mv.target,
      address: addressOf(mv.target),
      epoch: mv.epoch + 1,
    });
    // the history
    const h = await cli("migrations", "--json");
    expect(h.code).toBe(0);
    expect(JSON.parse(h.out).map((x: { phase: string }) => x.phase)).toContain("done");
    const table = await cli("migrations");
    expect(table.out).toMatch(new RegExp(`${mv.shard}.*done`));
  });

  it("aborts on a wrong checksum: the source is unfenced and keeps serving all its data, the copy is dropped", async () => {
    const c = client();
    const w = startWriter(c, "cs");
    while (w.acked.size < 200) await new Promise((r) => setTimeout(r, 10));
    await w.stop();
    const mv = pickMove(1);
    const before = readMap();
    // an agent that answers with a wrong checksum: the transport alters the source's answer
    class LyingRpc extends AgentRpc {
      override async json<T = unknown>(address: string, method: string, path: string, body?: unknown) {
        const r = await super.json<T>(address, method, path, body);
        if (path.includes("/checksum?")) (r.body as { checksum: string }).checksum = "deadbeef-1";
        return r;
      }
    }
    const rpc = new LyingRpc({ token: cluster.token });
    const store = new EmbeddedStore(cluster.dir);
    const logs: string[] = [];
    await expect(
      executeMigration(
        { shard: mv.shard, target: mv.target },
        { store, rpc, clock: systemClock, log: (s) => logs.push(s) },
      ),
    ).rejects.toThrow(/aborted.*checksum-mismatch/);
    rpc.close();
    expect(readMap()).toEqual(before);
    const src = await api(portOf(mv.source), "GET", `/v1/shards/${mv.shard}`);
    expect(src.json()).toMatchObject({ state: "owned", epoch: mv.epoch });
    expect((await api(portOf(mv.target), "GET", `/v1/shards/${mv.shard}`)).status).toBe(404);
    for (const [k, v] of w.acked) expect((await c.get(k))?.value.toString()).toBe(v);
    await c.put("after-abort", "ok");
    expect((await c.get("after-abort"))?.value.toString()).toBe("ok");
    c.close();
    const rec = (await listMigrations(new EmbeddedStore(cluster.dir))).records.find(
      (x) => x.shard === mv.shard && x.phase === "aborted",
    );
    expect(rec?.error).toMatch(/checksum-mismatch/);
    expect(rec?.phaseAt.fenced).toBeGreaterThan(0);
  });

  it("aborts when the store refuses the commit (the map changed), leaving the source serving", async () => {
    const mv = pickMove(2);
    const real = new EmbeddedStore(cluster.dir);
    const refusing = Object.assign(Object.create(real) as EmbeddedStore, {
      compareAndSet: async () => ({ ok: false as const, currentVersion: 999 }),
    });
    const rpc = new AgentRpc({ token: cluster.token });
    await expect(
      executeMigration(
        { shard: mv.shard, target: mv.target },
        { store: refusing, rpc, clock: systemClock, log: () => {} },
      ),
    ).rejects.toThrow(/commit was refused/);
    rpc.close();
    const src = await api(portOf(mv.source), "GET", `/v1/shards/${mv.shard}`);
    expect(src.json()).toMatchObject({ state: "owned", epoch: mv.epoch });
    expect((await api(portOf(mv.target), "GET", `/v1/shards/${mv.shard}`)).status).toBe(404);
  });

  it("aborts when the target refuses to receive (it already holds the shard)", async () => {
    const mv = pickMove(3);
    const created = await api(portOf(mv.target), "POST", `/v1/admin/shards/${mv.shard}/receive`, {
      body: JSON.stringify({ epoch: mv.epoch + 5 }),
      headers: { "content-type": "application/json" },
    });
    expect(created.status).toBe(201);
    const r = await cli("migrate", "--shard", mv.shard, "--to", mv.target, "--apply");
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/shard-exists/);
    expect(readMap().map.shards.find((s) => s.id === mv.shard)!.node).toBe(mv.source);
    // the foreign copy is not the coordinator's to drop... but this one was ours in the test: clean it
    const drop = await api(portOf(mv.target), "DELETE", `/v1/admin/shards/${mv.shard}`, {
      body: JSON.stringify({ epoch: mv.epoch + 5 }),
      headers: { "content-type": "application/json" },
    });
    expect(drop.status).toBe(200);
  });

  it("refuses hostile replication input and serves nothing from a receiving copy", async () => {
    const mv = pickMove(4);
    const tp = portOf(mv.target);
    const j = (body: unknown) => ({
      body: JSON.stringify(body),
      headers: { "content-type": "application/json" },
    });
    expect(
      (await api(tp, "POST", `/v1/admin/shards/${mv.shard}/receive`, j({ epoch: mv.epoch }))).status,
    ).toBe(201);
    const entry = (lsn: number, shardId = mv.shard) =>
      encodeEntry({
        lsn,
        timestamp: 1,
        migrationTimestamp: 0,
        op: "put",
        shardId,
        key: `k${lsn}`,
        value: Buffer.from("v"),
      });
    const append = (body: Buffer, epoch = mv.epoch) =>
      api(tp, "POST", `/v1/admin/shards/${mv.shard}/append`, {
        body,
        headers: { "x-shard-epoch": String(epoch) },
      });
    const bad = entry(1);
    bad[bad.length - 1] ^= 0xff;
    expect((await append(bad)).status).toBe(400); // wrong entry checksum
    expect((await append(entry(2))).status).toBe(409); // a gap
    expect((await append(entry(1, "shard-other"))).status).toBe(400); // another shard's entry
    expect((await append(entry(1), mv.epoch + 1)).status).toBe(409); // wrong epoch
    expect((await append(Buffer.concat([entry(1), entry(2)]))).status).toBe(200);
    expect((await append(entry(2))).status).toBe(409); // a replay
    // a receiving copy serves nothing
    const read = await api(tp, "GET", `/v1/shards/${mv.shard}/keys/k1`, {
      headers: { "x-shard-epoch": String(mv.epoch) },
    });
    expect(read.status).toBe(503);
    expect(read.json().error).toBe("not-serving");
    // it cannot be fenced/unfenced into service, nor activated before prepare
    expect(
      (await api(tp, "POST", `/v1/admin/shards/${mv.shard}/unfence`, j({ epoch: mv.epoch }))).status,
    ).toBe(409);
    expect(
      (await api(tp, "POST", `/v1/admin/shards/${mv.shard}/activate`, j({ epoch: mv.epoch }))).status,
    ).toBe(409);
    // prepare refuses a wrong LSN or a wrong checksum and stays receiving
    const sum = (await api(tp, "GET", `/v1/shards/${mv.shard}/checksum?upto=2`)).json().checksum as string;
    expect(
      (
        await api(
          tp,
          "POST",
          `/v1/admin/shards/${mv.shard}/prepare`,
          j({ epoch: mv.epoch, lastLsn: 3, checksum: sum }),
        )
      ).status,
    ).toBe(409);
    const wrong = await api(
      tp,
      "POST",
      `/v1/admin/shards/${mv.shard}/prepare`,
      j({ epoch: mv.epoch, lastLsn: 2, checksum: "00000000-1" }),
    );
    expect(wrong.status).toBe(409);
    expect(wrong.json()).toMatchObject({ error: "checksum-mismatch", vote: "abort" });
    const ok = await api(
      tp,
      "POST",
      `/v1/admin/shards/${mv.shard}/prepare`,
      j({ epoch: mv.epoch, lastLsn: 2, checksum: sum }),
    );
    expect(ok.json()).toMatchObject({ vote: "commit", state: "prepared" });
    // log reads: bad parameters
    expect((await api(tp, "GET", `/v1/shards/${mv.shard}/log`)).status).toBe(400);
    expect((await api(tp, "GET", `/v1/shards/${mv.shard}/log?from=0`)).status).toBe(400);
    expect((await api(tp, "GET", `/v1/shards/${mv.shard}/log?from=1`, { token: "wrong" })).status).toBe(401);
    const lg = await api(tp, "GET", `/v1/shards/${mv.shard}/log?from=2&max=5`);
    expect(lg.headers["x-entries"]).toBe("1");
    expect(lg.body).toEqual(entry(2));
    // abort = drop
    expect((await api(tp, "DELETE", `/v1/admin/shards/${mv.shard}`, j({ epoch: mv.epoch }))).status).toBe(
      200,
    );
  });

  it("an agent restarted mid-cutover asks the map: a committed target serves, an undecided source stays fenced", async () => {
    for (const [fp, victim] of [
      ["migrate.committed", "target"],
      ["migrate.fenced", "source"],
    ] as const) {
      const mv = pickMove(fp === "migrate.committed" ? 6 : 7);
      const { command, args } = shardctlCommand();
      const child = spawn(
        command,
        [...args, "--data-dir", cluster.dir, "migrate", "--shard", mv.shard, "--to", mv.target, "--apply"],
        {
          env: { ...env, SHARDCTL_FAILPOINT: fp },
          stdio: ["ignore", "ignore", "pipe"],
        },
      );
      let err = "";
      child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
      for (let i = 0; i < 1200 && !err.includes(`failpoint ${fp}: stopping`); i++) {
        if (child.exitCode !== null) throw new Error(`ended before ${fp}:\n${err}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      // the coordinator and one agent die mid-cutover; the agent comes back
      const node = victim === "target" ? mv.target : mv.source;
      process.kill(Number(readFileSync(join(cluster.dir, "local", node, "agent.pid"), "utf8")), "SIGKILL");
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      await new Promise((r) => setTimeout(r, 100));
      const up = await cli("up", "--local");
      expect(up.code, up.err).toBe(0);
      const log = readFileSync(join(cluster.dir, "local", node, "agent.log"), "utf8");
      const state = (await api(portOf(node), "GET", `/v1/shards/${mv.shard}`)).json() as {
        state: string;
        epoch: number;
      };
      if (victim === "target") {
        expect(log).toMatch(new RegExp(`shard ${mv.shard} \\(prepared, in a migration\\): serving`));
        expect(state).toMatchObject({ state: "owned", epoch: mv.epoch + 1 });
      } else {
        expect(log).toMatch(new RegExp(`shard ${mv.shard} \\(fenced, in a migration\\): unchanged`));
        expect(state).toMatchObject({ state: "fenced", epoch: mv.epoch });
      }
      // recovery finishes it either way; the shard is served with its data
      const rec = await cli("migrations", "--recover");
      expect(rec.code, rec.err).toBe(0);
      expect(rec.err).toMatch(victim === "target" ? /rolled-forward/ : /rolled-back/);
      const c = client();
      await c.put(`after-${fp}`, "ok");
      expect((await c.get(`after-${fp}`))?.value.toString()).toBe("ok");
      c.close();
    }
  });

  it("refuses a target without room for the copy (exit 3) before anything starts", async () => {
    // a fourth agent whose data directory is a 40 MiB tmpfs: less than the copy's headroom
    const small = join(cluster.dir, "small-node");
    mkdirSync(small, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=40m", "tmpfs", small]);
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [
        ...cliArgs(),
        "--data-dir",
        join(small, "data"),
        "agent",
        "--listen",
        `127.0.0.1:${port}`,
        "--zone",
        "c",
        "--node-id",
        "node-4",
        "--token-file",
        join(cluster.dir, "local", "token"),
        "--segments",
        "64",
      ],
      { stdio: "ignore", env },
    );
    try {
      for (
        let i = 0;
        i < 200 && (await http(port, "GET", "/health").catch(() => undefined))?.status !== 200;
        i++
      )
        await new Promise((r) => setTimeout(r, 50));
      const store = new EmbeddedStore(cluster.dir);
      const vm = (await store.load())!;
      const added = await store.compareAndSet(vm.version, {
        ...vm.map,
        nodes: [...vm.map.nodes, { id: "node-4", address: `127.0.0.1:${port}`, zone: "c" }],
      });
      expect(added.ok).toBe(true);
      const before = readMap();
      const journalBefore = (await listMigrations(store)).records.length;
      const mv = pickMove(5);
      const r = await cli("migrate", "--shard", mv.shard, "--to", "node-4", "--apply");
      expect(r.code, r.err).toBe(3);
      expect(r.err).toMatch(/node-4 has .* MiB free.*nothing was started/);
      expect(readMap()).toEqual(before);
      expect((await listMigrations(store)).records.length).toBe(journalBefore);
      expect((await api(portOf(mv.source), "GET", `/v1/shards/${mv.shard}`)).json()).toMatchObject({
        state: "owned",
      });
      // leave the map as it was for the other tests
      const cur = (await store.load())!;
      await store.compareAndSet(cur.version, {
        ...cur.map,
        nodes: cur.map.nodes.filter((n) => n.id !== "node-4"),
      });
    } finally {
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      execFileSync("umount", [small]);
    }
  });

  it("refuses a node that is not in the map and a stale plan file (exit 3), changing nothing", async () => {
    const before = readMap();
    const mv = pickMove(5);
    const gone = await cli("migrate", "--shard", mv.shard, "--to", "node-9", "--apply");
    expect(gone.code).toBe(3);
    expect(gone.err).toMatch(/node-9 is not in the location map/);
    const unknown = await cli("migrate", "--shard", "shard-999", "--to", mv.target, "--apply");
    expect(unknown.code).toBe(2);
    expect((await cli("migrate", "--apply")).code).toBe(2);
    const plan = await cli("plan", "--all", "--out", join(cluster.dir, "plan.json"));
    expect(plan.code, plan.err).toBe(0);
    const dry = await cli("migrate", join(cluster.dir, "plan.json"));
    expect(dry.code, dry.err).toBe(0);
    expect(dry.err).toMatch(/dry run/);
    expect(readMap()).toEqual(before);
    // the map moves on: one real migration
    expect((await cli("migrate", "--shard", mv.shard, "--to", mv.target, "--apply")).code).toBe(0);
    const stale = await cli("migrate", "--apply", join(cluster.dir, "plan.json"));
    expect(stale.code).toBe(3);
    expect(stale.err).toMatch(/re-plan/);
    // a tampered plan file is refused
    const text = readFileSync(join(cluster.dir, "plan.json"), "utf8").replace(
      /"mapVersion": \d+/,
      '"mapVersion": 1',
    );
    writeFileSync(join(cluster.dir, "tampered.json"), text);
    expect((await cli("migrate", "--apply", join(cluster.dir, "tampered.json"))).code).toBe(2);
  });
});
