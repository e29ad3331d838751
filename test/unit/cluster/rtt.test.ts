/** Measured round trips: the aggregation per (origin zone, node), the latency overlay, the probe's input checks. */
import { describe, expect, it } from "vitest";
import { parseProbeRequest } from "../../../src/agent/probe.js";
import { ApiError } from "../../../src/agent/http-util.js";
import { aggregateRtts, latencyNote, parsePeerResults, type RttPair } from "../../../src/cluster/rtt.js";
import { defaultZoneMatrix, LatencyModel } from "../../../src/engine/latency.js";
import { initialLayout, type LocationMap } from "../../../src/engine/location-map.js";

function map(nodes: [string, string][]): LocationMap {
  return initialLayout(
    16,
    nodes.map(([id, zone], i) => ({ id, zone, address: `127.0.0.1:${7000 + i}` })),
    { now: 0 },
  );
}

const ok = (from: string, to: string, medianMs: number): RttPair => ({ from, to, ok: true, medianMs });

describe("aggregateRtts", () => {
  it("takes, per origin zone and node, the median over the zone's agents; a node never measures itself", () => {
    // Given two agents in zone a, one in b, none in c
    const m = map([
      ["a1", "a"],
      ["a2", "a"],
      ["b1", "b"],
    ]);
    const agg = aggregateRtts(
      m,
      ["a", "b", "c"],
      [
        { node: "a1", peers: [ok("a1", "a2", 0.4), ok("a1", "b1", 30), ok("a1", "a1", 0)] },
        { node: "a2", peers: [ok("a2", "a1", 0.6), ok("a2", "b1", 34)] },
        {
          node: "b1",
          peers: [ok("b1", "a1", 31), { from: "b1", to: "a2", ok: false, error: "ECONNREFUSED" }],
        },
      ],
    );
    // Then
    expect(agg.zones).toEqual(["a", "b", "c"]);
    expect(agg.nodes).toEqual(["a1", "a2", "b1"]);
    expect(agg.rttMs).toEqual([
      [0.6, 0.4, 32], // a1 only measured by a2, a2 only by a1, b1 by both (median of 30 and 34)
      [31, null, null], // b1 failed to reach a2 and does not measure itself
      [null, null, null], // no agent in zone c
    ]);
    expect(agg.measuredCells).toBe(4);
  });

  it("ignores reports from nodes not in the map, peers not in the map and impossible numbers", () => {
    const m = map([
      ["a1", "a"],
      ["b1", "b"],
    ]);
    const agg = aggregateRtts(
      m,
      ["a", "b"],
      [
        { node: "ghost", peers: [ok("ghost", "a1", 5)] },
        {
          node: "a1",
          peers: [
            ok("a1", "x9", 5),
            ok("a1", "b1", -1),
            ok("a1", "b1", Number.NaN),
            ok("a1", "b1", Infinity),
          ],
        },
      ],
    );
    expect(agg.measuredCells).toBe(0);
    expect(agg.rttMs.flat().every((x) => x === null)).toBe(true);
  });

  it("adds zones of the map's nodes that the config does not list", () => {
    const agg = aggregateRtts(map([["z1", "zz"]]), ["a"], []);
    expect(agg.zones).toEqual(["a", "zz"]);
  });
});

describe("parsePeerResults (an agent's answer is input too)", () => {
  it("keeps well-formed results for the peers asked about and nothing else", () => {
    const asked = new Set(["p1", "p2", "p3"]);
    const got = parsePeerResults(
      "o",
      [
        { id: "p1", ok: true, medianMs: 2.5, minMs: 2 },
        { id: "p2", ok: true, medianMs: "fast" },
        { id: "p3", ok: false, error: "x".repeat(1000) },
        { id: "intruder", ok: true, medianMs: 1 },
        null,
        42,
      ],
      asked,
    );
    expect(got).toHaveLength(3);
    expect(got[0]).toEqual({ from: "o", to: "p1", ok: true, medianMs: 2.5, minMs: 2, error: undefined });
    expect(got[1].ok).toBe(false);
    expect(got[2].error).toHaveLength(300);
    expect(parsePeerResults("o", "not a list", asked)).toEqual([]);
  });
});

describe("LatencyModel.fromMeasurements", () => {
  it("replaces the measured cells and keeps the base elsewhere", () => {
    const base = LatencyModel.fromZoneMatrix(defaultZoneMatrix(["a", "b"]), [
      { id: "n1", zone: "a" },
      { id: "n2", zone: "b" },
    ]);
    const m = LatencyModel.fromMeasurements(base, {
      zones: ["b", "a", "unknown"],
      nodes: ["n2", "n1", "n9"],
      rttMs: [
        [null, 12.5, 3], // b→n2 unmeasured, b→n1 12.5, n9 unknown
        [80, -4, null], // a→n2 80, a→n1 negative: ignored
        [1, 1, 1],
      ],
    });
    expect(m.rttMs("b", "n1")).toBe(12.5);
    expect(m.rttMs("b", "n2")).toBe(1);
    expect(m.rttMs("a", "n2")).toBe(80);
    expect(m.rttMs("a", "n1")).toBe(1);
    // the base is not changed
    expect(base.rttMs("a", "n2")).toBe(50);
  });
});

describe("latencyNote", () => {
  it("says measured or assumed", () => {
    const m = {
      zones: ["a"],
      nodes: ["n"],
      rttMs: [[1]],
      measuredCells: 2,
      totalCells: 9,
      samples: 5,
      measuredAt: 0,
      agents: [{ node: "n3", zone: "c", ok: false, error: "down" }],
      pairs: [],
    };
    expect(latencyNote(m, "assumed: 1/50")).toBe(
      "latency: measured by the agents (2 of 9 zone→node round trips, median of 5 samples; the rest assumed: 1/50); no measurement from n3",
    );
    expect(latencyNote(undefined, "assumed 1/50", "no token")).toBe(
      "latency: assumed 1/50 (not measured: no token)",
    );
  });
});

describe("parseProbeRequest", () => {
  const peer = { id: "n1", address: "127.0.0.1:7001" };
  it("accepts peers with host:port addresses, IPv6 in brackets, and defaults", () => {
    const r = parseProbeRequest({
      peers: [peer, { id: "n2", address: "[::1]:7002" }, { id: "n3", address: "db-3.example:1" }],
    });
    expect(r.samples).toBe(5);
    expect(r.timeoutMs).toBe(1000);
    expect(r.peers.map((p) => p.id)).toEqual(["n1", "n2", "n3"]);
  });
  it.each([
    [null, /JSON object/],
    ["peers", /JSON object/],
    [{ peers: [{ ...peer, address: "127.0.0.1" }] }, /host:port/],
    [{ peers: [{ ...peer, address: "127.0.0.1:99999" }] }, /host:port/],
    [{ peers: [{ ...peer, address: "[::1:7001" }] }, /host:port/],
    [{ peers: [{ ...peer, address: "user@host:22" }] }, /host:port/],
    [{ peers: [{ ...peer, id: "" }] }, /node id/],
    [{ peers: [peer], samples: 1.5 }, /samples/],
    [{ peers: [peer], timeoutMs: 10 }, /timeoutMs/],
  ])("refuses %j", (body, message) => {
    expect(() => parseProbeRequest(body)).toThrow(ApiError);
    expect(() => parseProbeRequest(body)).toThrow(message);
  });
});
