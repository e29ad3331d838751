/**
 * Consul with ACLs on and default_policy = "deny": a token that may only read
 * gets a clear error on write and nothing is written; no token cannot even
 * read; a token with the documented policy works.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConsulHttp } from "../../../src/consul/http.js";
import { LeaderElection } from "../../../src/consul/leader.js";
import {
  deregisterAgentService,
  listAgentNodes,
  registerAgentService,
} from "../../../src/consul/services.js";
import { ConsulStore } from "../../../src/consul/store.js";
import type { UserError } from "../../../src/errors.js";
import { smallMap } from "../../contract/maps.js";
import { createToken, rawKeys, startConsulDev, type DevConsul } from "../../helpers/consul.js";

let consul: DevConsul;
beforeAll(async () => {
  consul = await startConsulDev({ acl: true });
});
afterAll(async () => {
  await consul?.stop();
});

const prefix = "acl-test/";
const open = (token?: string) =>
  new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix, token }), prefix });

describe("ACLs with default_policy deny", () => {
  it("a read-only token: the write is refused with a clear error and nothing is written", async () => {
    const ro = await createToken(consul, `key_prefix "${prefix}" { policy = "read" }`, "shardctl-ro");
    const store = open(ro);
    expect(await store.load()).toBeNull();
    const err = await store.compareAndSet(0, smallMap()).catch((e) => e);
    expect(err.message).toMatch(
      /^the token in CONSUL_HTTP_TOKEN may not write acl-test\/ \(Consul said: Permission denied/,
    );
    expect(err.hint).toMatch(/key_prefix "acl-test\/" \{ policy = "write" \}/);
    expect(await rawKeys(consul.addr, prefix, consul.token)).toEqual([]);
    await store.close();
  });

  it("a token with the documented policy (docs/CONSUL.md) reads, writes and leads with its liveness check", async () => {
    const rw = await createToken(
      consul,
      [
        `key_prefix "${prefix}" { policy = "write" }`,
        `session_prefix "" { policy = "write" }`,
        `service "shardctl-agent" { policy = "write" }`,
        `service "shardctl-autopilot" { policy = "write" }`,
        `service_prefix "" { policy = "read" }`,
        `node_prefix "" { policy = "read" }`,
      ].join("\n"),
      "shardctl-rw",
    );
    const store = open(rw);
    const r = await store.compareAndSet(0, smallMap());
    expect(r.ok).toBe(true);
    expect((await store.load({ consistent: true }))!.map).toEqual(smallMap());
    // A read-only token still cannot change it.
    const ro = open(await createToken(consul, `key_prefix "${prefix}" { policy = "read" }`, "shardctl-ro2"));
    await expect(ro.compareAndSet(r.ok ? r.version : 0, smallMap(1))).rejects.toThrow(/may not write/);
    expect((await store.load({ consistent: true }))!.map).toEqual(smallMap());
    // The autopilot registers its liveness check (no fallback to TTL-only sessions).
    const logs: string[] = [];
    const election = new LeaderElection({
      http: store.http,
      store,
      holder: "rw-ap",
      log: (m) => logs.push(m),
    });
    const lead = await election.campaign(new AbortController().signal);
    expect(lead.term).toBeGreaterThan(0);
    expect(logs.join("\n")).not.toMatch(/falling back/);
    await lead.resign();
    await election.close();
    await store.close();
    await ro.close();
  });

  it("nodes with a token that may read the keys but not the agents' service: refused naming the rules, not every agent shown unregistered", async () => {
    const admin = new ConsulHttp({ addr: consul.addr, prefix, token: consul.token });
    await registerAgentService(admin, { id: "acl-node-1", address: "127.0.0.1:1", zone: "a" });
    try {
      const kvOnly = new ConsulHttp({
        addr: consul.addr,
        prefix,
        token: await createToken(consul, `key_prefix "${prefix}" { policy = "read" }`, "shardctl-kv-only"),
      });
      const err = await listAgentNodes(kvOnly).catch((e: unknown) => e as UserError);
      expect((err as UserError).message).toMatch(
        /^the token in CONSUL_HTTP_TOKEN may not read service shardctl-agent or the nodes it runs on/,
      );
      expect((err as UserError).hint).toMatch(/service "shardctl-agent" \{ policy = "read" \}/);
      const reader = new ConsulHttp({
        addr: consul.addr,
        prefix,
        token: await createToken(
          consul,
          [`service "shardctl-agent" { policy = "read" }`, `node_prefix "" { policy = "read" }`].join("\n"),
          "shardctl-service-reader",
        ),
      });
      expect((await listAgentNodes(reader)).map((n) => n.id)).toContain("acl-node-1");
    } finally {
      await deregisterAgentService(admin, "acl-node-1");
    }
  });

  it("a token Consul does not know (deleted, expired, mistyped) is named as such, not as a missing permission", async () => {
    const store = open("00000000-0000-4000-8000-00000000dead");
    const err = (await store.load().catch((e: unknown) => e)) as UserError;
    expect(err.message).toMatch(
      /^Consul does not know the token in CONSUL_HTTP_TOKEN \(Consul said: ACL not found\)/,
    );
    expect(err.hint).toMatch(/SecretID/);
    await store.close();
  });

  it('no token at all, once a map exists: the read is refused (not mistaken for "no map"), naming the prefix', async () => {
    const store = open(undefined);
    await expect(store.load()).rejects.toThrow(/the token in CONSUL_HTTP_TOKEN may not read acl-test\//);
    await store.close();
  });

  it("an autopilot whose token may not register its liveness check falls back to the session TTL and still leads", async () => {
    const token = await createToken(
      consul,
      `key_prefix "${prefix}" { policy = "write" }\nsession_prefix "" { policy = "write" }`,
      "shardctl-no-service",
    );
    const http = new ConsulHttp({ addr: consul.addr, prefix, token });
    const store = new ConsulStore({ http, prefix });
    const logs: string[] = [];
    const election = new LeaderElection({ http, store, holder: "acl-ap", log: (m) => logs.push(m) });
    const lead = await election.campaign(new AbortController().signal);
    expect(lead.term).toBeGreaterThan(0);
    expect(logs.join("\n")).toMatch(
      /may not register the shardctl-autopilot service; falling back to the session TTL/,
    );
    await lead.resign();
    await election.close();
    await store.close();
  });
});
