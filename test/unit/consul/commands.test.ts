/** status / nodes / autopilot on the embedded store, and hostile flags (Consul-backed runs are in test/integration/consul). */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runCli } from "../../../src/cli.js";
import {
  TermStampedStore,
  type CycleReport,
  type MigrationStageReport,
} from "../../../src/consul/autopilot.js";
import { onceOutcome } from "../../../src/commands/autopilot.js";
import { newJournal } from "../../../src/engine/migration.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { agentlessMap, smallMap } from "../../contract/maps.js";

let dir: string;
let env: NodeJS.ProcessEnv;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-cmd-"));
  writeFileSync(join(dir, "c.yaml"), "{}\n");
  env = {
    HOME: dir,
    SHARDCTL_CONFIG: join(dir, "c.yaml"),
    SHARDCTL_DATA_DIR: dir,
    SHARDCTL_SEGMENTS: "1024",
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function cli(args: string[]) {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = "";
  let e = "";
  out.on("data", (b) => (o += b));
  err.on("data", (b) => (e += b));
  const code = await runCli(args, { out, err }, env);
  return { code, out: o, err: e };
}

describe("status and nodes on the embedded store", () => {
  it("an empty store: status says there is no map yet", async () => {
    const r = await cli(["status"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("map:        none yet");
  });

  it("status lists the embedded journal's open migrations, not the finished ones", async () => {
    const store = new EmbeddedStore(dir);
    const map = smallMap();
    const w = await store.compareAndSet(0, map);
    expect(w.ok).toBe(true);
    const sh = map.shards[0];
    const target = map.nodes.find((n) => n.id !== sh.node)!.id;
    const progress = { entriesCopied: 0, rounds: 0 };
    const open = {
      ...newJournal({ id: "m-open", shard: sh, target, planVersion: 1, term: 0, now: 1_700_000_000_000 }),
      ...progress,
    };
    const done = {
      ...newJournal({ id: "m-done", shard: sh, target, planVersion: 1, term: 0, now: 1 }),
      ...progress,
      phase: "done" as const,
    };
    expect((await store.putMigration({ record: open, expectRev: 0 })).ok).toBe(true);
    expect((await store.putMigration({ record: done, expectRev: 0 })).ok).toBe(true);
    const s = await cli(["status", "--json"]);
    expect(JSON.parse(s.out).migrations).toEqual([
      {
        id: "m-open",
        phase: "journaled",
        shard: sh.id,
        source: sh.node,
        target,
        startedAt: 1_700_000_000_000,
      },
    ]);
    const t = await cli(["status"]);
    expect(t.out).toMatch(new RegExp(`m-open *│ journaled *│ ${sh.id} *│ ${sh.node} *│ ${target} *│`));
    expect(t.out).not.toContain("m-done");
  });

  it("after a write: version, term, shards per node; nodes lists the map's nodes with health n/a", async () => {
    const w = await new EmbeddedStore(dir).compareAndSet(0, { ...smallMap(), term: 4 });
    expect(w.ok).toBe(true);
    const s = await cli(["status", "--json"]);
    expect(JSON.parse(s.out)).toMatchObject({
      store: "embedded",
      leader: null,
      term: 4,
      map: { version: 1, shards: 6, segments: 1024, mapTerm: 4 },
      nodes: [
        { id: "n1", shards: 2 },
        { id: "n2", shards: 2 },
        { id: "n3", shards: 2 },
      ],
      migrations: [],
    });
    const n = await cli(["nodes", "--json"]);
    expect(JSON.parse(n.out)).toEqual([
      {
        id: "n1",
        address: "127.0.0.1:7001",
        zone: "a",
        health: "n/a",
        inMap: true,
        shards: 2,
        registered: false,
      },
      {
        id: "n2",
        address: "127.0.0.1:7002",
        zone: "b",
        health: "n/a",
        inMap: true,
        shards: 2,
        registered: false,
      },
      {
        id: "n3",
        address: "127.0.0.1:7003",
        zone: "c",
        health: "n/a",
        inMap: true,
        shards: 2,
        registered: false,
      },
    ]);
  });

  it("autopilot --once on the embedded store runs one cycle (no election) and exits 0", async () => {
    await new EmbeddedStore(dir).compareAndSet(0, agentlessMap());
    const r = await cli(["autopilot", "--once"]);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/no leader election/);
    expect(r.err).toMatch(/term 0: (applied|no layout change)/);
  });
});

describe("how autopilot --once ends", () => {
  const report = (over: Partial<CycleReport> = {}): CycleReport => ({
    term: 0,
    baseVersion: 4,
    ops: 0,
    ...over,
  });
  const stage = (failed: MigrationStageReport["failed"]): MigrationStageReport => ({
    recovered: [],
    planned: failed.length,
    moved: [],
    failed,
    skipped: [],
    backingOff: [],
  });

  it("a cycle with nothing failed, or only changes held back, ends 0", () => {
    expect(onceOutcome(report(), undefined)).toBeUndefined();
    expect(onceOutcome(undefined, undefined)).toBeUndefined();
    expect(
      onceOutcome(report({ ops: 1, notApplied: "backing off: split of shard-1 until …" }), undefined),
    ).toBeUndefined();
    expect(onceOutcome(report({ migrations: stage([]) }), undefined)).toBeUndefined();
  });

  it("a layout change or a move that failed ends 1, naming each", () => {
    const e = onceOutcome(
      report({
        ops: 2,
        notApplied: "0 of 2 change(s) done; then: target down",
        layoutFailed: true,
        migrations: stage([{ shard: "shard-3", target: "node-2", error: "refused" }]),
      }),
      undefined,
    );
    expect(e?.exitCode).toBe(1);
    expect(e?.message).toBe(
      "the cycle ran, but a layout change failed (0 of 2 change(s) done; then: target down); the move of shard-3 to node-2 failed: refused",
    );
  });

  it("a signal ends 130 or 143, before any failure", () => {
    const failed = report({ layoutFailed: true });
    expect(onceOutcome(failed, "SIGINT")?.exitCode).toBe(130);
    expect(onceOutcome(undefined, "SIGTERM")?.exitCode).toBe(143);
    expect(onceOutcome(undefined, "SIGTERM")?.message).toMatch(/^SIGTERM: the autopilot stopped/);
  });
});

describe("hostile flags", () => {
  it.each([["abc"], ["0"], ["-1"], ["1e9"], [""]])("autopilot --interval %j is a usage error", async (v) => {
    const r = await cli(["autopilot", "--once", "--interval", v]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(v === "" ? /--interval is empty/ : /--interval must be a number of seconds/);
  });

  it.each([
    [
      ["--move-backoff", "-1"],
      /--move-backoff must be a number of seconds from 0\.1 to 604800 \(7 days\), got "-1"/,
    ],
    [["--move-backoff", "NaN"], /--move-backoff must be a number of seconds .*got "NaN"/],
    [["--move-backoff", "0"], /--move-backoff must be a number of seconds .*got "0"/],
    [["--move-backoff", "1e3"], /--move-backoff must be a number of seconds .*got "1e3"/],
    [["--move-backoff-max", "Infinity"], /--move-backoff-max must be a number of seconds .*got "Infinity"/],
    [["--move-backoff-max", "999999999"], /--move-backoff-max must be a number of seconds/],
    [
      ["--move-backoff", "600", "--move-backoff-max", "60"],
      /--move-backoff-max \(60 s\) must not be below --move-backoff \(600 s\)/,
    ],
  ])("autopilot %j is a usage error saying what is wrong", async (flags, message) => {
    const r = await cli(["autopilot", "--once", ...flags]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
  });

  it.each([["a b"], ["x;rm -rf"], ["é"], ["a".repeat(200)]])(
    "autopilot --id %j is a usage error",
    async (v) => {
      const r = await cli(["autopilot", "--once", "--id", v]);
      expect(r.code).toBe(2);
    },
  );

  it.each([
    ["ftp://nope", /the scheme ftp:\/\/ is not http:\/\/ or https:\/\//],
    ["http://127.0.0.1:8500/v1", /it has a path \(\/v1\)/],
    ["127.0.0.1:99999", /port 99999 is not a TCP port/],
    ["user:pw@127.0.0.1:8500", /it holds credentials/],
    ["unix:///run/consul.sock", /a unix socket is not supported/],
  ])(
    "a malformed CONSUL_HTTP_ADDR %j is a usage error (exit 2) saying what is wrong, before any request",
    async (addr, what) => {
      env = { ...env, SHARDCTL_STORE: "consul", CONSUL_HTTP_ADDR: addr };
      const r = await cli(["status"]);
      expect(r.code).toBe(2);
      expect(r.err).toContain(`error: CONSUL_HTTP_ADDR ${JSON.stringify(addr)} is not a Consul address: `);
      expect(r.err).toMatch(what);
      expect(r.err).toMatch(/hint: .*e\.g\. 127\.0\.0\.1:8500/);
    },
  );

  it.each([
    ["a\nb", /CONSUL_HTTP_TOKEN holds whitespace/],
    ["tok\n", /CONSUL_HTTP_TOKEN holds leading or trailing whitespace/],
    ["two words", /CONSUL_HTTP_TOKEN holds whitespace/],
    ["tök€n", /CONSUL_HTTP_TOKEN holds the character U\+00F6/],
    ["\u0007bell", /CONSUL_HTTP_TOKEN holds the character U\+0007/],
  ])(
    "a malformed CONSUL_HTTP_TOKEN %j is a usage error (exit 2), not 'cannot reach Consul'",
    async (token, what) => {
      env = { ...env, SHARDCTL_STORE: "consul", CONSUL_HTTP_ADDR: "127.0.0.1:1", CONSUL_HTTP_TOKEN: token };
      const r = await cli(["status"]);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(what);
      expect(r.err).not.toMatch(/cannot reach Consul/);
      expect(r.err).toMatch(/hint: it is the SecretID of a Consul ACL token, one word, e\.g\. /);
    },
  );

  it("a bad Consul address or token in the config file is a usage error naming the file and the field", async () => {
    const file = join(dir, "c.yaml");
    writeFileSync(file, 'consul:\n  addr: "http://x:1/path"\n');
    env = { ...env, SHARDCTL_STORE: "consul" };
    let r = await cli(["status"]);
    expect(r.code).toBe(2);
    expect(r.err).toContain(
      `consul.addr in ${file} "http://x:1/path" is not a Consul address: it has a path`,
    );
    writeFileSync(file, 'consul:\n  token: "abc def"\n');
    r = await cli(["status"]);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`consul.token in ${file} holds whitespace`);
  });

  it("CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN do not matter to a command on the embedded store", async () => {
    env = { ...env, CONSUL_HTTP_ADDR: "unix:///run/consul.sock", CONSUL_HTTP_TOKEN: "a b" };
    const r = await cli(["status"]);
    expect(r.code, r.err).toBe(0);
  });

  it("an unusable prefix is a usage error", async () => {
    env = { ...env, SHARDCTL_STORE: "consul", SHARDCTL_CONSUL_PREFIX: "../etc" };
    const r = await cli(["status"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/prefix "..\/etc" is not usable/);
  });
});

describe("TermStampedStore", () => {
  it("stamps the leader's term on every map it writes", async () => {
    const inner = new EmbeddedStore(dir);
    const stamped = new TermStampedStore(inner, 7);
    const r = await stamped.compareAndSet(0, smallMap());
    expect(r.ok).toBe(true);
    expect((await inner.load())!.map.term).toBe(7);
  });
});
