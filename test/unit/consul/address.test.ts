import { describe, expect, it } from "vitest";
import { checkConsulToken } from "../../../src/consul/address.js";
import { parseConsulAddr } from "../../../src/consul/http.js";
import { UsageError } from "../../../src/errors.js";
import { consulKeys, normalizePrefix } from "../../../src/consul/keys.js";
import { consulTimeoutMs } from "../../../src/consul/open.js";

describe("CONSUL_HTTP_ADDR parsing", () => {
  it.each([
    ["127.0.0.1:8500", "127.0.0.1", 8500, false],
    ["localhost", "localhost", 8500, false],
    ["http://10.0.0.5:18500", "10.0.0.5", 18500, false],
    ["https://consul.example.com", "consul.example.com", 443, true],
  ])("%s → %s:%d", (addr, host, port, secure) => {
    expect(parseConsulAddr(addr)).toMatchObject({ host, port, secure });
  });

  it.each([
    "",
    "   ",
    "ftp://x:1",
    "http://x:1/some/path",
    "unix:///var/run/consul.sock",
    "a b:1",
    "http://:99999",
    "127.0.0.1:8500?dc=eu",
    "127.0.0.1:8500#x",
    "user:secret@127.0.0.1:8500",
    "http://127.0.0.1:0",
    // the Consul client looked a bracketed IPv6 literal up as a name; it was an internal error
    "[::1]:8500",
    "http://[::1]:8500",
    "[::1]",
  ])("refuses %j: a usage error (exit 2) with an example of a valid address", (addr) => {
    let err: unknown;
    try {
      parseConsulAddr(addr);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).exitCode).toBe(2);
    expect((err as UsageError).message).toMatch(/^CONSUL_HTTP_ADDR ".*" is not a Consul address: ./);
    expect((err as UsageError).hint).toMatch(/e\.g\. 127\.0\.0\.1:8500/);
  });

  it("says an IPv6 address is not supported, and what to give instead", () => {
    expect(() => parseConsulAddr("[::1]:8500")).toThrow(
      /is not a Consul address: an IPv6 address is not supported$/,
    );
  });

  it("names where the address came from", () => {
    expect(() => parseConsulAddr("ftp://x", "consul.addr in /etc/shardctl.yaml")).toThrow(
      /^consul\.addr in \/etc\/shardctl\.yaml "ftp:\/\/x" is not a Consul address: the scheme ftp:\/\//,
    );
  });
});

describe("CONSUL_HTTP_TOKEN checks", () => {
  it.each(["", "3f2a9c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b", "anonymous", "s.AbC_123+/="])("accepts %j", (t) => {
    expect(() => checkConsulToken(t)).not.toThrow();
  });
  it.each([
    ["a\nb", /whitespace/],
    [" lead", /leading or trailing whitespace/],
    ["tab\there", /whitespace/],
    ["ünï", /U\+00FC/],
    ["\u0000", /U\+0000/],
    ["😀", /U\+1F600/],
  ])("refuses %j as a usage error", (t, what) => {
    expect(() => checkConsulToken(t)).toThrow(UsageError);
    expect(() => checkConsulToken(t)).toThrow(what);
  });
});

describe("the key prefix", () => {
  it("gets a trailing slash and names every key under it", () => {
    expect(normalizePrefix("team/shardctl")).toBe("team/shardctl/");
    expect(consulKeys("shardctl/")).toMatchObject({
      meta: "shardctl/map/meta",
      term: "shardctl/term",
      leader: "shardctl/leader",
    });
  });

  it.each(["", "/abs", "a//b", "../up", "a/../b", "spa ce/", "q?x", "%2F"])("refuses %j", (p) => {
    expect(() => normalizePrefix(p)).toThrow(/not usable/);
  });
});

describe("SHARDCTL_CONSUL_TIMEOUT", () => {
  it("defaults to 5 s and accepts seconds", () => {
    expect(consulTimeoutMs({})).toBe(5000);
    expect(consulTimeoutMs({ SHARDCTL_CONSUL_TIMEOUT: "1.5" })).toBe(1500);
    // the smallest bound: 1 ms (below, it rounded to 0, which is no timeout at all)
    expect(consulTimeoutMs({ SHARDCTL_CONSUL_TIMEOUT: "0.001" })).toBe(1);
  });
  it.each(["0", "-1", "abc", "1000", "0x10", "1e2", " 5", "5 ", "Infinity", "0.0001", "0.0004"])(
    "refuses %j",
    (v) => {
      expect(() => consulTimeoutMs({ SHARDCTL_CONSUL_TIMEOUT: v })).toThrow(/SHARDCTL_CONSUL_TIMEOUT/);
    },
  );
});
