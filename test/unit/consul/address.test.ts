import { describe, expect, it } from "vitest";
import { parseConsulAddr } from "../../../src/consul/http.js";
import { consulKeys, normalizePrefix } from "../../../src/consul/keys.js";
import { consulTimeoutMs } from "../../../src/consul/open.js";

describe("CONSUL_HTTP_ADDR parsing", () => {
  it.each([
    ["127.0.0.1:8500", "127.0.0.1", 8500, false],
    ["localhost", "localhost", 8500, false],
    ["http://10.0.0.5:18500", "10.0.0.5", 18500, false],
    ["https://consul.example.com", "consul.example.com", 443, true],
    ["[::1]:8500", "::1", 8500, false],
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
  ])("refuses %j with a hint", (addr) => {
    expect(() => parseConsulAddr(addr)).toThrow(/CONSUL_HTTP_ADDR|not supported/);
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
  });
  it.each(["0", "-1", "abc", "1000"])("refuses %j", (v) => {
    expect(() => consulTimeoutMs({ SHARDCTL_CONSUL_TIMEOUT: v })).toThrow(/SHARDCTL_CONSUL_TIMEOUT/);
  });
});
