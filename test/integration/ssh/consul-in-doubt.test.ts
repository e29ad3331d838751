/**
 * A deployed agent reads the map from Consul after a crash: deployed over SSH
 * with the Consul store (each node reaching Consul at its inventory
 * consulAddr), killed (-9) while one of its shards is fenced in the middle of
 * a migration whose commit then lands in Consul; its supervisor restarts it,
 * and it redirects to the shard's new owner without any coordinator.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { buildBundle, type Bundle } from "../../../src/cluster/bundle.js";
import { ConsulHttp } from "../../../src/consul/http.js";
import { ConsulStore } from "../../../src/consul/store.js";
import { cli } from "../../helpers/cli.js";
import { startConsulDev, uniquePrefix, type DevConsul } from "../../helpers/consul.js";
import {
  consulDeployArgs,
  inventoryNode,
  startSshLab,
  type SshHost,
  type SshLab,
} from "../../helpers/sshd.js";

const TOKEN = "consul-in-doubt-token";
let lab: SshLab;
let consul: DevConsul;
let bundle: Bundle;
let hosts: SshHost[];
let env: NodeJS.ProcessEnv;
let flags: string[];
let prefix: string;

async function agentCall(host: SshHost, method: string, path: string, body?: unknown, epoch?: number) {
  const r = await fetch(`http://${host.address}:${host.agentPort}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${TOKEN}`,
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
      ...(epoch !== undefined ? { "x-shard-epoch": String(epoch) } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await r.text();
  return { status: r.status, json: () => JSON.parse(text) as Record<string, unknown> };
}

beforeAll(async () => {
  lab = await startSshLab();
  hosts = [await lab.addHost("d1"), await lab.addHost("d2")];
  // Consul also listens where the hosts' namespaces reach this machine
  consul = await startConsulDev({ clientAddrs: hosts.map((h) => h.gateway) });
  bundle = await buildBundle(join(lab.dir, "bundle", "agent.mjs"));
  const inventory = join(lab.dir, "inventory.yaml");
  writeFileSync(
    inventory,
    stringify({
      nodes: hosts.map((h, i) =>
        inventoryNode(lab, h, `d${i + 1}`, ["a", "b"][i], { consulAddr: `${h.gateway}:${consul.httpPort}` }),
      ),
    }),
  );
  prefix = uniquePrefix("in-doubt");
  ({ env, flags } = consulDeployArgs(lab, {
    token: TOKEN,
    consulAddr: consul.addr,
    prefix,
    inventory,
    bundle: bundle.path,
  }));
}, 120_000);

afterAll(async () => {
  await lab?.cleanup();
  await consul?.stop();
}, 60_000);

describe("a deployed agent with shards in doubt", () => {
  it("reads the commit from Consul after a crash and redirects to the new owner", async () => {
    for (const id of ["d1", "d2"]) {
      const r = await cli(["--store", "consul", "deploy", ...flags, "--nodes", id], env);
      expect(r.code, r.err).toBe(0);
    }
    const [d1, d2] = hosts;
    // a key on d1 (the first deploy gave it every shard), written
    let key = "";
    let loc: { shard: string; node: string; epoch: number } | undefined;
    for (let i = 0; !loc || loc.node !== "d1"; i++) {
      key = `key-${i}`;
      const r = await cli(["--store", "consul", "locate", key, "--json"], env);
      expect(r.code, r.err).toBe(0);
      loc = JSON.parse(r.out) as typeof loc;
    }
    expect((await cli(["--store", "consul", "put", key, "before"], env)).code).toBe(0);

    // the migration fences the shard on d1, then d1 dies before it hears the outcome
    const fence = await agentCall(d1, "POST", `/v1/admin/shards/${loc.shard}/fence`, {
      epoch: loc.epoch,
      migration: "m-in-doubt",
    });
    expect(fence.status).toBe(200);
    // d1's agent: this lab's directory, node id d1
    const agentOfD1 = () =>
      lab.processesWith(`${d1.home}/agent/agent.mjs`).filter((pid) => cmdline(pid).includes("--node-id\0d1"));
    const before = agentOfD1();
    expect(before.length).toBe(1);

    // the commit lands in Consul: the shard is d2's at the next epoch
    const store = new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix }), prefix });
    const cur = (await store.load())!;
    const next = structuredClone(cur.map);
    const moved = loc.epoch + 1;
    Object.assign(
      next.shards.find((s) => s.id === loc!.shard)!,
      { node: "d2", epoch: moved },
    );
    expect((await store.compareAndSet(cur.version, next)).ok).toBe(true);
    await store.close();
    process.kill(before[0], "SIGKILL");

    // the supervisor restarts it; before serving, it reads the map from Consul
    let r: Awaited<ReturnType<typeof agentCall>> | undefined;
    for (let i = 0; i < 300; i++) {
      r = await agentCall(d1, "GET", `/v1/shards/${loc.shard}/keys/${key}`, undefined, moved).catch(
        () => undefined,
      );
      if (r?.status === 421) break;
      await sleep(100);
    }
    expect(r?.status).toBe(421);
    expect(r!.json()).toMatchObject({ redirect: { node: "d2", epoch: moved } });
    const after = agentOfD1();
    expect(after.length).toBe(1);
    expect(after[0]).not.toBe(before[0]);
    const log = readFileSync(`${d1.home}/agent/agent.log`, "utf8");
    expect(log).toMatch(new RegExp(`shard ${loc.shard} \\(fenced, in a migration\\): redirected`));
    // the deploy wrote the token nowhere but the agents' token files (no Consul token here: an empty file)
    expect(readFileSync(`${d1.home}/agent/consul-token`, "utf8")).toBe("");
    expect(readFileSync(`${d2.home}/agent/agent.sh`, "utf8")).toContain(`${d2.gateway}:${consul.httpPort}`);
  });
});

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}
