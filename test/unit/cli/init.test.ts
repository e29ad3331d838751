import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseNodeSpecs } from "../../../src/commands/init.js";
import { cli } from "../../helpers/cli.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-init-nodes-");

const zones = ["a", "b", "c"];

describe("init --nodes", () => {
  it("reads id=host:port@zone, the address optional", () => {
    expect(
      parseNodeSpecs("n1=10.0.0.1:7400@a, n2@b ,n3=[::1]:7401@c,n4=db-1.example:65535@a", zones),
    ).toEqual([
      { id: "n1", address: "10.0.0.1:7400", zone: "a" },
      { id: "n2", address: "", zone: "b" },
      { id: "n3", address: "[::1]:7401", zone: "c" },
      { id: "n4", address: "db-1.example:65535", zone: "a" },
    ]);
  });

  it("refuses an entry without a zone (it was put in zone a, or dealt round-robin), naming the entry", () => {
    expect(() => parseNodeSpecs("n1=host:7400", zones)).toThrow(/--nodes entry 1 "n1=host:7400" has no zone/);
    expect(() => parseNodeSpecs("n1=h:1@a,n2", zones)).toThrow(/--nodes entry 2 "n2" has no zone/);
    expect(() => parseNodeSpecs("n1=h:1@", zones)).toThrow(
      /--nodes entry 1 \(node n1\): zone "" is not configured/,
    );
  });

  it("refuses an empty entry", () => {
    for (const spec of ["n1=h:7400@a,,n2=h:7401@b", "n1=h:7400@a,", ",n1=h:7400@a", "n1=h:7400@a, ,n2=h:1@b"])
      expect(() => parseNodeSpecs(spec, zones), spec).toThrow(/--nodes entry \d is empty/);
  });

  it("refuses an address with a space or a control character, naming the entry", () => {
    for (const spec of [
      "n1=ho st:7400@a",
      "n1=host :7400@a",
      "n1=host:74 00@a",
      "n1=ho\tst:7400@a",
      "n1=h\u0007:1@a",
      "n1=h:1:2@a",
    ])
      expect(() => parseNodeSpecs(spec, zones), JSON.stringify(spec)).toThrow(
        /--nodes entry 1 \(node n1\): address .* is not HOST:PORT/,
      );
  });

  it("refuses an address no agent could listen on", () => {
    for (const spec of [
      "n1=h:99999@a",
      "n1=:@a",
      "n1=h:-1@a",
      "n1=h:0@a",
      "n1=:7400@a",
      "n1=h@a",
      "n1=[]:7400@a",
      "n1=@a",
    ])
      expect(() => parseNodeSpecs(spec, zones), spec).toThrow(/is not HOST:PORT/);
  });

  it("refuses a bad id, an unknown zone, a node listed twice, or none", () => {
    expect(() => parseNodeSpecs("n 1=h:1@a", zones)).toThrow(/--nodes entry 1: node id/);
    expect(() => parseNodeSpecs("n1=h:1@mars", zones)).toThrow(/not configured/);
    expect(() => parseNodeSpecs("n1=h:1@a,n1=h:2@b", zones)).toThrow(/twice/);
    expect(() => parseNodeSpecs(" , ", zones)).toThrow(/at least one/);
  });
});

describe("init --nodes refused", () => {
  it("exits 2 naming the entry, and writes nothing (the existing map stays as it was)", async () => {
    const d = newDir();
    const env = { SHARDCTL_DATA_DIR: join(d, "data"), SHARDCTL_SEGMENTS: "64" };
    expect((await cli(["init"], env)).code).toBe(0);
    const before = readFileSync(join(d, "data/location-map.json"));
    for (const [nodes, re] of [
      ["n1=ho st:7400@a", /--nodes entry 1 \(node n1\): address "ho st:7400" is not HOST:PORT/],
      ["n1=host:7400", /--nodes entry 1 "n1=host:7400" has no zone/],
      ["n1=h:7400@a,,n2=h:7401@b", /--nodes entry 2 is empty/],
    ] as const) {
      const r = await cli(["init", "--force", "--nodes", nodes], env);
      expect(r.code, nodes).toBe(2);
      expect(r.err).toMatch(re);
      expect(readFileSync(join(d, "data/location-map.json"))).toEqual(before);
      expect(readdirSync(join(d, "data"))).toEqual(["location-map.json"]);
    }
  });
});
