/** The deploy, undeploy and node commands up to the point where they would connect. */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { cli } from "../../helpers/cli.js";

let dir: string;
let inventory: string;
let env: NodeJS.ProcessEnv;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-deploy-cli-"));
  inventory = join(dir, "inventory.yaml");
  writeFileSync(
    inventory,
    stringify({
      defaults: { user: "shardctl", keyFile: join(dir, "id_ed25519") },
      nodes: [
        { id: "n1", host: "127.0.0.1", port: 1, zone: "a" },
        { id: "n2", host: "127.0.0.1", port: 1, zone: "b", dataDir: "/srv/other", agentPort: 7401 },
      ],
    }),
  );
  env = { SHARDCTL_DATA_DIR: join(dir, "data"), SHARDCTL_TOKEN: "t0ken-secret", HOME: dir };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("shardctl deploy / undeploy / node", () => {
  it("documents itself with worked examples", async () => {
    for (const args of [["deploy"], ["undeploy"], ["node"], ["node", "logs"]]) {
      const r = await cli([...args, "--help"], env);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/Examples:|Usage:/);
    }
    const r = await cli(["deploy", "--help"], env);
    expect(r.out).toContain("--accept-new-host-keys");
    expect(r.out).toContain("Examples:");
  });

  it("needs a token (exit 3) and says where to put it", async () => {
    const r = await cli(["deploy", "-i", inventory], { ...env, SHARDCTL_TOKEN: undefined });
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/bearer token/);
    expect(r.err).toMatch(/hint: set SHARDCTL_TOKEN/);
  });

  it("refuses a bad inventory (exit 2) naming the node and the field", async () => {
    writeFileSync(
      inventory,
      stringify({ nodes: [{ id: "n1", host: "h", user: "u", keyFile: "k", zone: "a", agentPort: "seven" }] }),
    );
    const r = await cli(["deploy", "-i", inventory], env);
    expect(r.code).toBe(2);
    expect(r.err).toContain('node "n1" (nodes[0]).agentPort:');
  });

  it("refuses a missing inventory, unknown --nodes and a bad --concurrency (exit 2)", async () => {
    expect((await cli(["deploy", "-i", join(dir, "nope.yaml")], env)).err).toMatch(
      /cannot read the inventory/,
    );
    const unknown = await cli(["deploy", "-i", inventory, "--nodes", "n1,n7"], env);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/"n7", not in the inventory/);
    expect((await cli(["deploy", "-i", inventory, "--concurrency", "0"], env)).code).toBe(2);
    // past ~24.8 days Node fires the interrupt's bound at once: a Ctrl-C would not finish the cut-over
    for (const value of ["99999999", "86401", "0"]) {
      const r = await cli(["deploy", "-i", inventory, "--health-timeout", value], env);
      expect(r.code, value).toBe(2);
      expect(r.err).toMatch(value === "0" ? /must be a positive integer/ : /at most 86400 seconds \(a day\)/);
    }
    expect((await cli(["node", "logs", "n9", "-i", inventory], env)).code).toBe(2);
  });

  it("refuses an empty --nodes (exit 2) instead of deploying every node of the inventory", async () => {
    const bundle = join(dir, "agent.mjs");
    writeFileSync(bundle, "console.log('agent');\n");
    for (const list of ["", ",", " , "]) {
      const r = await cli(
        ["deploy", "-i", inventory, "--known-hosts", join(dir, "kh"), "--bundle", bundle, "--nodes", list],
        env,
      );
      expect(r.code, r.err).toBe(2);
      // an empty value is refused for every option alike (src/cli.ts refuseEmptyOptions)
      expect(r.err).toMatch(list === "" ? /--nodes is empty/ : /--nodes names no node/);
      expect(r.err).not.toMatch(/n1|n2/);
    }
  });

  it("refuses a bad --keep-releases and --rollback with --bundle (exit 2) before building, connecting or writing anything", async () => {
    const bundle = join(dir, "agent.mjs");
    writeFileSync(bundle, "console.log('agent');\n");
    const kh = join(dir, "kh");
    for (const value of ["0", "-1", "x", "1.5", "", " ", "2x", "1e3", "101"]) {
      // `--opt=value`: a value starting with "-" reaches the check instead of looking like a flag
      for (const args of [
        ["deploy", "-i", inventory, "--known-hosts", kh, `--keep-releases=${value}`],
        ["deploy", "-i", inventory, "--known-hosts", kh, "--bundle", bundle, `--keep-releases=${value}`],
      ]) {
        const r = await cli(args, env);
        expect(r.code, `${value}: ${r.err}`).toBe(2);
        expect(r.err).toMatch(
          value === "" ? /--keep-releases is empty/ : /--keep-releases must be a whole number from 1 to 100/,
        );
        expect(r.err).not.toMatch(/building the agent bundle/);
      }
    }
    const both = await cli(
      ["deploy", "-i", inventory, "--known-hosts", kh, "--rollback", "--bundle", bundle],
      env,
    );
    expect(both.code).toBe(2);
    expect(both.err).toMatch(/--rollback installs a release kept on each node: it takes no --bundle/);
    // nothing was built, connected to or written
    expect(existsSync(join(dir, "data"))).toBe(false);
    expect(existsSync(kh)).toBe(false);
  });

  it("refuses to undeploy a node that owns shards (exit 3) before connecting anywhere", async () => {
    const init = await cli(["init", "--nodes", "n1=127.0.0.1:7400@a,n2=127.0.0.1:7401@b"], env);
    expect(init.code, init.err).toBe(0);
    const r = await cli(["undeploy", "n1", "-i", inventory], env);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(
      /node n1 still owns 4 shard\(s\) in the location map: shard-1, shard-2, shard-3, shard-4/,
    );
    expect(r.err).toContain("`shardctl plan --all`");
  });

  it("reports an unreachable node per node and exits 1, without secrets in the output", async () => {
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id_ed25519")]);
    const keyBody = readFileSync(join(dir, "id_ed25519"), "utf8").split("\n")[1];
    const bundle = join(dir, "agent.mjs");
    writeFileSync(bundle, "console.log('agent');\n");
    const r = await cli(
      ["deploy", "-i", inventory, "--known-hosts", join(dir, "kh"), "--bundle", bundle, "--json"],
      env,
    );
    expect(r.code).toBe(1);
    const result = JSON.parse(r.out) as {
      nodes: { id: string; outcome: string; step: string; error: string }[];
    };
    expect(result.nodes.map((n) => [n.id, n.outcome, n.step])).toEqual([
      ["n1", "failed", "connect"],
      ["n2", "failed", "connect"],
    ]);
    expect(result.nodes[0].error).toMatch(/connection refused/);
    for (const text of [r.out, r.err]) {
      expect(text).not.toContain("t0ken-secret");
      expect(text).not.toContain(keyBody);
    }
  });

  it("reports a malformed private key without printing it", async () => {
    writeFileSync(
      join(dir, "id_ed25519"),
      "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    const bundle = join(dir, "agent.mjs");
    writeFileSync(bundle, "console.log('agent');\n");
    const r = await cli(
      ["deploy", "-i", inventory, "--known-hosts", join(dir, "kh"), "--bundle", bundle, "--nodes", "n1"],
      env,
    );
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/cannot use the private key .*id_ed25519/);
    expect(r.err + r.out).not.toContain("c2VjcmV0LWtleS1tYXRlcmlhbA");
  });
});
