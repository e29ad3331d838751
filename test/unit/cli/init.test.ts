import { describe, expect, it } from "vitest";
import { parseNodeSpecs } from "../../../src/commands/init.js";

const zones = ["a", "b", "c"];

describe("init --nodes", () => {
  it("reads id=host:port@zone, the address and the zone optional", () => {
    expect(parseNodeSpecs("n1=10.0.0.1:7400@a, n2@b ,n3=[::1]:7401", zones)).toEqual([
      { id: "n1", address: "10.0.0.1:7400", zone: "a" },
      { id: "n2", address: "", zone: "b" },
      { id: "n3", address: "[::1]:7401", zone: "c" },
    ]);
  });

  it("refuses an address no agent could listen on", () => {
    for (const spec of [
      "n1=h:99999@a",
      "n1=:@a",
      "n1=h:-1@a",
      "n1=h:0@a",
      "n1=:7400@a",
      "n1=h@a",
      "n1=[]:7400",
    ])
      expect(() => parseNodeSpecs(spec, zones), spec).toThrow(/is not HOST:PORT/);
  });

  it("refuses a bad id, an unknown zone, a node listed twice, or none", () => {
    expect(() => parseNodeSpecs("n 1=h:1@a", zones)).toThrow(/node id/);
    expect(() => parseNodeSpecs("n1=h:1@mars", zones)).toThrow(/not configured/);
    expect(() => parseNodeSpecs("n1=h:1@a,n1=h:2@b", zones)).toThrow(/twice/);
    expect(() => parseNodeSpecs(" , ", zones)).toThrow(/at least one/);
  });
});
