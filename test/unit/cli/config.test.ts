import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parsePositiveInt } from "../../../src/commands/common.js";
import { loadConfig } from "../../../src/config.js";
import { UsageError } from "../../../src/errors.js";

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), "shardctl-config-"))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const load = (env: NodeJS.ProcessEnv = {}, file?: string) =>
  loadConfig({ cwd: dir, home: join(dir, "home"), env, file });

describe("config", () => {
  it("has defaults without any file", () => {
    const { config, source } = load();
    expect(source).toBeUndefined();
    expect(config).toMatchObject({ store: "embedded", segments: 4096, zones: ["a", "b", "c"] });
  });

  it("reads ./shardctl.yaml, then ~/.config/shardctl/config.yaml", () => {
    mkdirSync(join(dir, "home/.config/shardctl"), { recursive: true });
    writeFileSync(join(dir, "home/.config/shardctl/config.yaml"), "segments: 128\n");
    expect(load().config.segments).toBe(128);
    writeFileSync(join(dir, "shardctl.yaml"), "segments: 256\nreshard:\n  splitRate: 99\n");
    const { config, source } = load();
    expect(source).toBe(join(dir, "shardctl.yaml"));
    expect(config.segments).toBe(256);
    expect(config.reshard).toMatchObject({ splitRate: 99, mergeRate: 5 });
  });

  it("lets the environment override the file", () => {
    writeFileSync(join(dir, "shardctl.yaml"), "segments: 256\nstore: embedded\n");
    const { config } = load({
      SHARDCTL_SEGMENTS: "512",
      SHARDCTL_STORE: "consul",
      SHARDCTL_ZONES: "x,y",
      CONSUL_HTTP_ADDR: "127.0.0.1:9500",
      CONSUL_HTTP_TOKEN: "t0k",
      SHARDCTL_CONSUL_PREFIX: "p/",
    });
    expect(config).toMatchObject({ segments: 512, store: "consul", zones: ["x", "y"] });
    expect(config.consul).toEqual({ addr: "127.0.0.1:9500", token: "t0k", prefix: "p/" });
  });

  it("reads the Consul token from CONSUL_HTTP_TOKEN_FILE; CONSUL_HTTP_TOKEN wins; a bad file is an error", () => {
    const file = join(dir, "consul-token");
    writeFileSync(file, "  s3cret-token\n");
    expect(load({ CONSUL_HTTP_TOKEN_FILE: file }).config.consul.token).toBe("s3cret-token");
    expect(load({ CONSUL_HTTP_TOKEN_FILE: file, CONSUL_HTTP_TOKEN: "direct" }).config.consul.token).toBe(
      "direct",
    );
    expect(() => load({ CONSUL_HTTP_TOKEN_FILE: join(dir, "missing") })).toThrow(
      /cannot read CONSUL_HTTP_TOKEN_FILE .*missing: it does not exist/,
    );
    writeFileSync(file, "\n");
    expect(() => load({ CONSUL_HTTP_TOKEN_FILE: file })).toThrow(/does not hold a token/);
    writeFileSync(file, "two words\n");
    expect(() => load({ CONSUL_HTTP_TOKEN_FILE: file })).toThrow(/does not hold a token/);
  });

  it("reads CONSUL_HTTP_TOKEN_FILE with a bound: a directory or a file over 64 KiB is a UsageError naming it", () => {
    // both were read whole (a directory as a raw EISDIR; /dev/zero until memory ran out)
    const big = join(dir, "big-token");
    writeFileSync(big, "a".repeat(64 * 1024 + 1));
    for (const [file, re] of [
      [dir, /^CONSUL_HTTP_TOKEN_FILE .* is a directory$/],
      [big, /^CONSUL_HTTP_TOKEN_FILE .*big-token is larger than 64 KiB/],
    ] as const) {
      let err: unknown;
      try {
        load({ CONSUL_HTTP_TOKEN_FILE: file });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).message).toMatch(re);
      expect((err as UsageError).hint).toMatch(/CONSUL_HTTP_TOKEN/);
    }
    writeFileSync(big, "a".repeat(64 * 1024 - 1) + "\n");
    expect(load({ CONSUL_HTTP_TOKEN_FILE: big }).config.consul.token).toHaveLength(64 * 1024 - 1);
  });

  it.each([
    ["a wrong type", "segments: many\n", /segments/],
    ["an unknown field", "segmnets: 12\n", /segmnets|Unrecognized/i],
    ["a bad store", "store: etcd-ish\n", /store/],
    ["a negative threshold", "reshard:\n  splitRate: -1\n", /splitRate/],
    ["mergeRate above splitRate", "reshard:\n  splitRate: 5\n  mergeRate: 9\n", /mergeRate/],
    ["duplicate zones", "zones: [a, a]\n", /distinct/],
    ["a zone named like a windows series", "zones: [a, total]\n", /"total" cannot name a zone/],
    ["a list at the top", "- 1\n- 2\n", /mapping/],
    ["broken YAML", "segments: [1, 2\n", /not valid YAML/],
  ])("refuses %s with a clear error", (_name, text, message) => {
    writeFileSync(join(dir, "shardctl.yaml"), text);
    expect(() => load()).toThrow(message);
  });

  it("says where broken YAML is without quoting the line (it may hold a token)", () => {
    writeFileSync(join(dir, "shardctl.yaml"), "store: embedded\nagent:\n  token: s3cr3tAgentTok: x\n");
    let message = "";
    try {
      load();
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/not valid YAML: .* at line 3, column 10$/);
    expect(message).not.toContain("s3cr3t");
  });

  it("reads a data directory starting with ~/ from the home directory, as a shell would", () => {
    const file = join(dir, "home.yaml");
    writeFileSync(file, "dataDir: ~/shdata\n");
    expect(load({}, file).config.dataDir).toBe(join(dir, "home", "shdata"));
    expect(load({ SHARDCTL_DATA_DIR: "~" }).config.dataDir).toBe(join(dir, "home"));
    // only a leading ~/: a ~ elsewhere, or ~user, is a name like any other
    expect(load({ SHARDCTL_DATA_DIR: "a/~/b" }).config.dataDir).toBe("a/~/b");
    expect(load({ SHARDCTL_DATA_DIR: "~other/x" }).config.dataDir).toBe("~other/x");
  });

  it("refuses a wrong type from the environment", () => {
    expect(() => load({ SHARDCTL_SEGMENTS: "lots" })).toThrow(/segments/);
  });

  it("a bad value from the environment names its variable, not the file beside it", () => {
    const file = join(dir, "ok.yaml");
    writeFileSync(file, "segments: 4096\n");
    let err: unknown;
    try {
      load({ SHARDCTL_STORE: "foo" }, file);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/^invalid configuration:\n {2}store \(from SHARDCTL_STORE\): /);
    expect((err as Error).message).not.toContain(file);
    // a problem of the file's own is still placed in it
    writeFileSync(file, "store: foo\n");
    expect(() => load({}, file)).toThrow(new RegExp(`invalid configuration in ${file}:\n {2}store: `));
  });

  it("the --store flag wins over a bad SHARDCTL_STORE (it is not used)", () => {
    const r = loadConfig({
      cwd: dir,
      home: join(dir, "home"),
      env: { SHARDCTL_STORE: "foo" },
      store: "embedded",
    });
    expect(r.config.store).toBe("embedded");
  });

  it("reads SHARDCTL_SEGMENTS as decimal digits only, as the flags are read", () => {
    expect(load({ SHARDCTL_SEGMENTS: "4096" }).config.segments).toBe(4096);
    // Number() read each of these as 4096 (or 16); the flags refuse them
    for (const v of ["0x1000", "4.096e3", " 4096", "4096 ", "4096.0", "+4096", "0b1", "１６", "0"]) {
      expect(() => load({ SHARDCTL_SEGMENTS: v }), v).toThrow(UsageError);
      expect(() => load({ SHARDCTL_SEGMENTS: v }), v).toThrow(
        `SHARDCTL_SEGMENTS (the number of segments) must be a positive integer, got ${JSON.stringify(v)}`,
      );
    }
  });

  it("the flags' parser refuses the same spellings", () => {
    expect(parsePositiveInt("16", "--count")).toBe(16);
    for (const v of ["0x10", "1e3", " 16", "16 ", "1.0", ""])
      expect(() => parsePositiveInt(v, "--count"), v).toThrow(/--count must be a positive integer/);
  });

  it("refuses a key limit the log format cannot hold (16-bit key lengths)", () => {
    writeFileSync(join(dir, "shardctl.yaml"), "limits:\n  maxKeyBytes: 65535\n");
    expect(load().config.limits.maxKeyBytes).toBe(65535);
    writeFileSync(join(dir, "shardctl.yaml"), "limits:\n  maxKeyBytes: 65536\n");
    expect(() => load()).toThrow(/maxKeyBytes/);
  });

  it("refuses an explicit file that does not exist", () => {
    expect(() => load({}, "nope.yaml")).toThrow(/does not exist/);
  });
});
