/**
 * Splits and merges carried out by the migration machinery (issue 8) on a
 * local cluster of real agents: data moves between the agents' shards while
 * a writer keeps writing; the abort paths (a wrong checksum, a coordinator
 * killed before the commit) leave every shard as it was; a coordinator killed
 * after the commit is rolled forward; the import endpoints refuse hostile
 * input.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ShardClient } from "../../../src/client/shard-client.js";
import { AgentRpc } from "../../../src/cluster/agent-rpc.js";
import { executeLayoutChange, executeLayoutDiff } from "../../../src/cluster/reshape.js";
import type { LayoutDiff, LayoutOp } from "../../../src/engine/assigner.js";
import type { LocationMap, SegmentRange } from "../../../src/engine/location-map.js";
import { systemClock } from "../../../src/engine/ports.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { http } from "../agent/harness.js";
import { freePorts } from "../../helpers/ports.js";
import { keysIn, readMapFile, writeZoneMatrix, localClusterSuite } from "./local-fixture.js";
import { cli as runShardctl, shardctlCommand } from "../../helpers/cli.js";

const SEGMENTS = 64;
const cluster = localClusterSuite("reshape", SEGMENTS);
const { env, cli, seg } = cluster;
const seg0 = (k: string) => seg.segmentOf(k);

function readMap(): { version: number; map: LocationMap } {
  return readMapFile(cluster.dir);
}
const portOf = (node: string) =>
  Number(
    readMap()
      .map.nodes.find((n) => n.id === node)!
      .address.split(":")[1],
  );
const api = (node: string, method: string, path: string, opts: Parameters<typeof http>[3] = {}) =>
  http(portOf(node), method, path, { token: cluster.token, ...opts });
const json = (body: unknown) => ({
  body: JSON.stringify(body),
  headers: { "content-type": "application/json" },
});
const client = () =>
  new ShardClient({
    store: new EmbeddedStore(cluster.dir),
    token: cluster.token,
    deadlineMs: 20_000,
    baseBackoffMs: 5,
  });

/** A split op taking the first segment of a multi-segment shard into a new shard. */
function splitOp(shardIndex: number): { op: LayoutOp; piece: string; segment: number } {
  const { map } = readMap();
  const sh = map.shards[shardIndex];
  const segment = sh.ranges[0][0];
  const rest: SegmentRange[] = [];
  for (const [a, b] of sh.ranges) {
    if (a <= segment && segment < b) {
      if (segment + 1 < b) rest.push([segment + 1, b]);
    } else rest.push([a, b]);
  }
  const piece = `shard-${map.nextShardSeq}`;
  return {
    op: {
      kind: "split",
      shard: sh.id,
      node: sh.node,
      reason: "hot-segment",
      pieces: [
        { id: sh.id, ranges: rest, load: 0 },
        { id: piece, ranges: [[segment, segment + 1]], load: 0 },
      ],
    },
    piece,
    segment,
  };
}

describe("splits and merges on agents", () => {
  it("splits a segment out onto another node while a writer writes; every acknowledged write is served after", async () => {
    const { op, piece, segment } = splitOp(0);
    if (op.kind !== "split") throw new Error("setup");
    const c = client();
    const hot = keysIn(seg, [[segment, segment + 1]], "hot-", 5);
    const cold = keysIn(seg, op.pieces[0].ranges, "cold-", 10);
    const acked = new Map<string, string>();
    for (const k of [...hot, ...cold]) {
      await c.put(k, `${k}-0`);
      acked.set(k, `${k}-0`);
    }
    let stop = false;
    const writer = (async () => {
      for (let i = 1; !stop; i++) {
        const k = [...hot, ...cold][i % (hot.length + cold.length)];
        await c.put(k, `${k}-${i}`);
        acked.set(k, `${k}-${i}`);
      }
    })();
    while (acked.size < 15) await new Promise((r) => setTimeout(r, 5));
    const before = readMap();
    const src = before.map.shards[0];
    const target = before.map.nodes.find((n) => n.id !== src.node)!.id;
    const rpc = new AgentRpc({ token: cluster.token });
    const rec = await executeLayoutChange(
      { op, pieceNodes: { [piece]: target } },
      { store: new EmbeddedStore(cluster.dir), rpc, clock: systemClock, log: () => {} },
    );
    await new Promise((r) => setTimeout(r, 100));
    stop = true;
    await writer;
    rpc.close();
    expect(rec.phase).toBe("done");
    expect(rec.writePauseMs).toBeLessThan(5000);
    const after = readMap().map;
    const p = after.shards.find((s) => s.id === piece)!;
    expect(p).toMatchObject({ node: target, epoch: 1, ranges: [[segment, segment + 1]] });
    expect(after.shards.find((s) => s.id === src.id)).toMatchObject({
      epoch: src.epoch + 1,
      ranges: op.pieces[0].ranges,
    });
    for (const [k, v] of acked) expect((await c.get(k))?.value.toString(), k).toBe(v);
    // the old owner refuses the moved segment's keys at its new epoch: they are no longer its own
    const r = await api(src.node, "GET", `/v1/shards/${src.id}/keys/${encodeURIComponent(hot[0])}`, {
      headers: { "x-shard-epoch": String(src.epoch + 1) },
    });
    expect(r.status).toBeGreaterThanOrEqual(400);
    c.close();
  });

  it("a split whose new piece goes to a node that refuses the connection aborts clean: no record left open, the shard can move at once", async () => {
    // a node in the map whose agent is down: nothing listens on its port
    const store = new EmbeddedStore(cluster.dir);
    const [down] = await freePorts(1);
    const cur = (await store.load())!;
    const zone = cur.map.nodes[0].zone;
    const withDown = {
      ...cur.map,
      nodes: [...cur.map.nodes, { id: "node-down", address: `127.0.0.1:${down}`, zone }],
    };
    expect((await store.compareAndSet(cur.version, withDown)).ok).toBe(true);
    const { op, piece } = splitOp(1);
    if (op.kind !== "split") throw new Error("setup");
    const rpc = new AgentRpc({ token: cluster.token });
    try {
      const err = await executeLayoutChange(
        { op, pieceNodes: { [piece]: "node-down" } },
        { store, rpc, clock: systemClock, log: () => {} },
      ).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err).toBeInstanceOf(Error);
      // aborted, not left waiting for a roll-back on the node that never heard of it
      expect(err!.message).not.toMatch(/roll-back did not finish/);
      const { records } = await store.listMigrations();
      const mine = records.map((r) => r.record).filter((r) => r.layout && r.shard === op.shard);
      expect(mine.at(-1)!.phase).toBe("aborted");
      expect(mine.at(-1)!.rollBackPending).toBeUndefined();
      // and the shard moves elsewhere at once
      const sh = readMap().map.shards.find((x) => x.id === op.shard)!;
      const to = readMap().map.nodes.find((n) => n.id !== sh.node && n.id !== "node-down")!.id;
      const moved = await cli("migrate", "--shard", sh.id, "--to", to, "--apply");
      expect(moved.code, moved.err).toBe(0);
    } finally {
      rpc.close();
      const now = (await store.load())!;
      const back = { ...now.map, nodes: now.map.nodes.filter((n) => n.id !== "node-down") };
      expect((await store.compareAndSet(now.version, back)).ok).toBe(true);
    }
  });

  it("merges two shards on different nodes into one; all their data is served from the kept shard", async () => {
    const { map } = readMap();
    // two neighbouring shards on different nodes
    const sorted = [...map.shards].sort((a, b) => a.ranges[0][0] - b.ranges[0][0]);
    const i = sorted.findIndex(
      (s, k) => k + 1 < sorted.length && sorted[k + 1].node !== s.node && s.ranges.length === 1,
    );
    const [keep, gone] = [sorted[i], sorted[i + 1]];
    const c = client();
    const keys = [...keysIn(seg, keep.ranges, "mk-", 6), ...keysIn(seg, gone.ranges, "mg-", 6)];
    for (const k of keys) await c.put(k, `v-${k}`);
    const op: LayoutOp = {
      kind: "merge",
      shards: [keep.id, gone.id],
      node: keep.node,
      ranges: [...keep.ranges, ...gone.ranges].sort((a, b) => a[0] - b[0]),
      load: 0,
    };
    const rpc = new AgentRpc({ token: cluster.token });
    const rec = await executeLayoutChange(
      { op },
      { store: new EmbeddedStore(cluster.dir), rpc, clock: systemClock, log: () => {} },
    );
    rpc.close();
    expect(rec.phase).toBe("done");
    const after = readMap().map;
    expect(after.shards.some((s) => s.id === gone.id)).toBe(false);
    expect(after.shards.find((s) => s.id === keep.id)!.epoch).toBeGreaterThan(
      Math.max(keep.epoch, gone.epoch),
    );
    for (const k of keys) expect((await c.get(k))?.value.toString(), k).toBe(`v-${k}`);
    // the merged-away shard redirects to the kept one
    expect((await api(gone.node, "GET", `/v1/shards/${gone.id}`)).json()).toMatchObject({
      state: "not-owned",
    });
    c.close();
  });

  it("aborts a split and a merge on a wrong checksum: pieces dropped, imports purged, sources serve as before", async () => {
    class LyingRpc extends AgentRpc {
      override async json<T = unknown>(address: string, method: string, path: string, body?: unknown) {
        const r = await super.json<T>(address, method, path, body);
        if (path.includes("/export-checksum?")) (r.body as { checksum: string }).checksum = "deadbeef-1";
        return r;
      }
    }
    const c = client();
    const { op, piece, segment } = splitOp(1);
    if (op.kind !== "split") throw new Error("setup");
    const ks = keysIn(seg, [[segment, segment + 1]], "ab-", 4);
    for (const k of ks) await c.put(k, `v-${k}`);
    const before = readMap();
    const rpc = new LyingRpc({ token: cluster.token });
    const deps = { store: new EmbeddedStore(cluster.dir), rpc, clock: systemClock, log: () => {} };
    await expect(executeLayoutChange({ op }, deps)).rejects.toThrow(/aborted.*checksum-mismatch/);
    expect(readMap()).toEqual(before);
    expect((await api(op.node, "GET", `/v1/shards/${piece}`)).status).toBe(404);
    expect((await api(op.node, "GET", `/v1/shards/${op.shard}`)).json()).toMatchObject({ state: "owned" });
    for (const k of ks) expect((await c.get(k))?.value.toString()).toBe(`v-${k}`);

    // a merge: the kept shard imported the other's keys, then purges them on abort
    const sorted = [...readMap().map.shards].sort((a, b) => a.ranges[0][0] - b.ranges[0][0]);
    const [keep, gone] = [sorted[sorted.length - 2], sorted[sorted.length - 1]];
    const gk = keysIn(seg, gone.ranges, "gk-", 5);
    for (const k of gk) await c.put(k, `v-${k}`);
    const keptBefore = (await api(keep.node, "GET", `/v1/shards/${keep.id}`)).json() as { keys: number };
    const merge: LayoutOp = {
      kind: "merge",
      shards: [keep.id, gone.id],
      node: keep.node,
      ranges: [...keep.ranges, ...gone.ranges].sort((a, b) => a[0] - b[0]),
      load: 0,
    };
    await expect(executeLayoutChange({ op: merge }, deps)).rejects.toThrow(/aborted.*checksum-mismatch/);
    rpc.close();
    const keptAfter = (await api(keep.node, "GET", `/v1/shards/${keep.id}`)).json() as {
      keys: number;
      state: string;
    };
    expect(keptAfter.state).toBe("owned");
    expect(keptAfter.keys).toBe(keptBefore.keys);
    expect((await api(gone.node, "GET", `/v1/shards/${gone.id}`)).json()).toMatchObject({ state: "owned" });
    for (const k of gk) expect((await c.get(k))?.value.toString()).toBe(`v-${k}`);
    const hist = JSON.parse((await cli("migrations", "--json")).out) as { phase: string; error?: string }[];
    expect(hist.filter((h) => h.phase === "aborted" && /checksum-mismatch/.test(h.error ?? "")).length).toBe(
      2,
    );
    c.close();
  });

  it("recovery rolls a split back when its coordinator died before the commit, and forward after it", async () => {
    for (const [fp, expectDone] of [
      ["migrate.prepared", false],
      ["migrate.committed", true],
    ] as const) {
      // `reshard --apply` with a tiny split threshold picks a hot segment; the coordinator stops at the failpoint
      const c = client();
      const { map } = readMap();
      const multi = map.shards.find((s) => s.ranges.reduce((n, [a, b]) => n + b - a, 0) > 1)!;
      const hot = keysIn(seg, [[multi.ranges[0][0], multi.ranges[0][0] + 1]], `rk-${fp}-`, 1)[0];
      for (let i = 0; i < 30; i++) await c.put(hot, `v${i}`);
      // a key the split's source keeps (another segment of its shard)
      const kept = keysIn(seg, multi.ranges, `kept-${fp}-`, 40).find(
        (k) => seg.segmentOf(k) !== seg.segmentOf(hot),
      )!;
      await c.put(kept, "before");
      c.close();
      const cfg = join(cluster.dir, "split.yaml");
      const { writeFileSync } = await import("node:fs");
      writeFileSync(
        cfg,
        "reshard:\n  splitRate: 0.01\n  mergeRate: 0\n  shardLoadCap: 100000\n  minDwellSeconds: 0\n",
      );
      const { command, args } = shardctlCommand();
      const child = spawn(command, [...args, "--data-dir", cluster.dir, "reshard", "--apply"], {
        env: { ...env, SHARDCTL_CONFIG: cfg, SHARDCTL_FAILPOINT: fp },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let err = "";
      child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
      const deadline = Date.now() + 60_000;
      while (!err.includes(`failpoint ${fp}: stopping`)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no failpoint ${fp}:\n${err}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      child.kill("SIGKILL");
      await new Promise((r) => child.on("exit", r));
      // a client reads the kept key meanwhile, routed by the map as it is: after the commit, at the
      // source's new epoch (a read served by the fenced source must not take that epoch for its own:
      // the roll-forward then found it 'stale' and the source stayed fenced for good)
      const reader = client();
      expect((await reader.get(kept))?.value.toString()).toBe("before");
      reader.close();
      const before = readMap();
      const rec = await cli("migrations", "--recover", "--json");
      expect(rec.code, rec.err).toBe(0);
      const last = (JSON.parse(rec.out) as { phase: string; layout?: { op: LayoutOp } }[]).at(-1)!;
      expect(last.phase).toBe(expectDone ? "done" : "aborted");
      expect(rec.err).toMatch(expectDone ? /rolled-forward/ : /rolled-back/);
      const op = last.layout!.op;
      if (op.kind !== "split") throw new Error("expected a split");
      const piece = op.pieces[1].id;
      const node = readMap().map.nodes.find((n) => n.id === op.node)!.id;
      if (expectDone) {
        expect(readMap().map.shards.some((s) => s.id === piece)).toBe(true);
        expect((await api(node, "GET", `/v1/shards/${piece}`)).json()).toMatchObject({
          state: "owned",
          epoch: 1,
        });
      } else {
        expect(readMap()).toEqual(before);
        expect((await api(node, "GET", `/v1/shards/${piece}`)).status).toBe(404);
      }
      expect((await api(node, "GET", `/v1/shards/${op.shard}`)).json()).toMatchObject({ state: "owned" });
      const c2 = client();
      expect((await c2.get(hot))?.value.toString()).toBe("v29");
      // and the source takes writes again
      await c2.put(kept, "after");
      expect((await c2.get(kept))?.value.toString()).toBe("after");
      c2.close();
    }
  });

  it("a reshard diff planned against an older map version is refused before anything starts", async () => {
    // Given a split planned against the map as it is, and then a change to the map by someone else
    const { version } = readMap();
    const { op } = splitOp(0);
    const store = new EmbeddedStore(cluster.dir);
    const current = (await store.load())!;
    const bumped = await store.compareAndSet(current.version, current.map);
    expect(bumped.ok).toBe(true);
    const before = await store.listMigrations();
    const diff: LayoutDiff = {
      ops: [op],
      shardsBefore: current.map.shards.length,
      shardsAfter: current.map.shards.length + 1,
      dedicatedAfter: 1,
      heldByDwell: [],
    };
    const rpc = new AgentRpc({ token: cluster.token });
    try {
      // When the diff is carried out with the version it was planned against
      const result = await executeLayoutDiff(
        diff,
        { store, rpc, clock: systemClock, log: () => {} },
        version,
      );
      // Then nothing was done: no change applied, no migration journaled, the map as it was
      expect(result.appliedVersion).toBeUndefined();
      expect(result.records).toEqual([]);
      expect(result.notApplied).toMatch(
        new RegExp(
          `computed against location map version ${version}, but the map is now at version ${version + 1}`,
        ),
      );
      expect(readMap().version).toBe(version + 1);
      expect((await store.listMigrations()).records.length).toBe(before.records.length);
    } finally {
      rpc.close();
    }
  });

  it("refuses hostile import and export requests, changing nothing", async () => {
    const { map } = readMap();
    const sh = map.shards[0];
    const node = sh.node;
    const other = map.shards.find((s) => s.node === node && s.id !== sh.id) ?? map.shards[1];
    // export: ranges missing or malformed
    expect((await api(node, "GET", `/v1/shards/${sh.id}/export?from=1`)).status).toBe(400);
    expect((await api(node, "GET", `/v1/shards/${sh.id}/export?from=1&ranges=9-x`)).status).toBe(400);
    expect((await api(node, "GET", `/v1/shards/${sh.id}/export?from=1&ranges=5-3`)).status).toBe(400);
    // import without a begun import, or without headers
    const noHeaders = await api(node, "POST", `/v1/admin/shards/${sh.id}/import`, { body: Buffer.alloc(0) });
    expect(noHeaders.status).toBe(400);
    const notBegun = await api(node, "POST", `/v1/admin/shards/${sh.id}/import`, {
      body: Buffer.alloc(0),
      headers: { "x-source-shard": other.id, "x-migration": "m-x", "x-from": "1", "x-scanned-through": "0" },
    });
    expect(notBegun.status).toBe(409);
    // import-begin of ranges the shard owns
    const overlap = await api(
      node,
      "POST",
      `/v1/admin/shards/${sh.id}/import-begin`,
      json({ epoch: sh.epoch, source: other.id, migration: "m-x", ranges: sh.ranges }),
    );
    expect(overlap.status).toBe(400);
    const noMigration = await api(
      node,
      "POST",
      `/v1/admin/shards/${sh.id}/import-begin`,
      json({ epoch: sh.epoch, source: other.id, ranges: other.ranges }),
    );
    expect(noMigration.status).toBe(400);
    // begin properly, then send entries of a foreign shard and keys outside the ranges
    const begin = await api(
      node,
      "POST",
      `/v1/admin/shards/${sh.id}/import-begin`,
      json({ epoch: sh.epoch, source: other.id, migration: "m-hostile", ranges: other.ranges }),
    );
    expect(begin.status).toBe(201);
    const srcNode = other.node;
    const exp = await api(
      srcNode,
      "GET",
      `/v1/shards/${other.id}/export?from=1&ranges=${other.ranges.map(([a, b]) => `${a}-${b}`).join(",")}`,
    );
    expect(exp.status).toBe(200);
    const wrongSource = await api(node, "POST", `/v1/admin/shards/${sh.id}/import`, {
      body: exp.body,
      headers: {
        "x-source-shard": "shard-999",
        "x-migration": "m-hostile",
        "x-from": "1",
        "x-scanned-through": exp.headers["x-scanned-through"] as string,
      },
    });
    expect(wrongSource.status).toBe(409);
    const gap = await api(node, "POST", `/v1/admin/shards/${sh.id}/import`, {
      body: exp.body,
      headers: {
        "x-source-shard": other.id,
        "x-migration": "m-hostile",
        "x-from": "7",
        "x-scanned-through": exp.headers["x-scanned-through"] as string,
      },
    });
    expect(gap.status).toBe(409);
    if (Number(exp.headers["x-entries"]) > 0) {
      const cut = await api(node, "POST", `/v1/admin/shards/${sh.id}/import`, {
        body: exp.body.subarray(0, exp.body.length - 3),
        headers: {
          "x-source-shard": other.id,
          "x-migration": "m-hostile",
          "x-from": "1",
          "x-scanned-through": exp.headers["x-scanned-through"] as string,
        },
      });
      expect(cut.status).toBe(400);
    }
    // a snapshot page out of turn
    const snapGap = await api(node, "POST", `/v1/admin/shards/${sh.id}/import`, {
      body: Buffer.alloc(0),
      headers: {
        "x-source-shard": other.id,
        "x-migration": "m-hostile",
        "x-from": "1",
        "x-scanned-through": "0",
        "x-snapshot-lsn": "5",
        "x-snapshot-skip": "3",
      },
    });
    expect(snapGap.status).toBe(409);
    const keysBefore = ((await api(node, "GET", `/v1/shards/${sh.id}`)).json() as { keys: number }).keys;
    // a reshape of a shard that is not fenced
    const reshape = await api(
      node,
      "POST",
      `/v1/admin/shards/${sh.id}/reshape`,
      json({ epoch: sh.epoch + 1, migration: "m-hostile", ranges: sh.ranges }),
    );
    expect(reshape.status).toBe(409);
    // an import-commit before prepare
    const early = await api(
      node,
      "POST",
      `/v1/admin/shards/${sh.id}/import-commit`,
      json({ epoch: sh.epoch + 1, migration: "m-hostile", ranges: sh.ranges }),
    );
    expect(early.status).toBe(409);
    // clean up: the abort forgets the import; nothing was imported
    const abort = await api(
      node,
      "POST",
      `/v1/admin/shards/${sh.id}/import-abort`,
      json({ epoch: 1, migration: "m-hostile" }),
    );
    expect(abort.status).toBe(200);
    expect(abort.json()).toMatchObject({ purged: 0 });
    expect(((await api(node, "GET", `/v1/shards/${sh.id}`)).json() as { keys: number }).keys).toBe(
      keysBefore,
    );
  });

  it("the autopilot splits a hot segment out and moves it to the zone its traffic comes from", async () => {
    const { map } = readMap();
    const nodeA = map.nodes.find((n) => n.zone === "a")!.id;
    const nodeB = map.nodes.find((n) => n.zone === "b")!.id;
    const onA = map.shards.find((s) => s.node === nodeA && s.ranges.reduce((n, [a, b]) => n + b - a, 0) > 1)!;
    const hot = keysIn(seg, onA.ranges, "autopilot-hot-", 1)[0];
    const c = new ShardClient({
      store: new EmbeddedStore(cluster.dir),
      token: cluster.token,
      originZone: "b",
      deadlineMs: 20_000,
    });
    for (let i = 0; i < 60; i++) await c.put(hot, `v${i}`);
    const { writeFileSync } = await import("node:fs");
    const cfg = join(cluster.dir, "autopilot.yaml");
    writeFileSync(
      cfg,
      "reshard:\n  splitRate: 0.05\n  mergeRate: 0\n  shardLoadCap: 100000\n  minDwellSeconds: 0\n",
    );
    const zones = writeZoneMatrix(cluster.dir);
    const r = await runShardctl(["--data-dir", cluster.dir, "autopilot", "--once", "--latency", zones], {
      ...env,
      SHARDCTL_CONFIG: cfg,
    });
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/applied \d+ layout change/);
    expect(r.err).toMatch(/migrations: \d+ move\(s\) planned, [1-9]\d* done/);
    const hotSeg = seg0(hot);
    const after = readMap().map;
    const owner = after.shards.find((s) => s.ranges.some(([a, b]) => hotSeg >= a && hotSeg < b))!;
    expect(owner.ranges).toEqual([[hotSeg, hotSeg + 1]]);
    expect(owner.node).toBe(nodeB);
    expect((await c.get(hot))?.value.toString()).toBe("v59");
    c.close();
    // a bad latency file is a usage error before anything runs
    const bad = await runShardctl(
      ["--data-dir", cluster.dir, "autopilot", "--once", "--latency", join(cluster.dir, "nope.json")],
      env,
    );
    expect(bad.code).toBe(2);
  });
});
