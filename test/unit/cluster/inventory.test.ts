import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { loadInventory, parseInventory, selectNodes } from "../../../src/cluster/inventory.js";
import { UsageError } from "../../../src/errors.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-inventory-");

const FP = "SHA256:" + "A".repeat(43);
const opts = { home: "/home/op", baseDir: "/etc/shardctl", zones: ["a", "b", "c"], haveAgent: false };

function parse(doc: unknown, o = opts) {
  return parseInventory(typeof doc === "string" ? doc : stringify(doc), "inv.yaml", o);
}

function problems(doc: unknown, o = opts): string {
  try {
    parse(doc, o);
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error("expected the inventory to be refused");
}

const good = {
  defaults: { user: "shardctl", keyFile: "~/.ssh/id_ed25519", dataDir: "/var/lib/shardctl" },
  nodes: [
    { id: "n1", host: "10.0.0.1", zone: "a", capacity: { shards: 32, cpus: 4 } },
    {
      id: "n2",
      host: "node2.example",
      port: 2222,
      zone: "b",
      keyFile: "keys/n2",
      hostKey: FP,
      agentPort: 7500,
      capacity: 16,
    },
    {
      id: "n3",
      host: "fd00::3",
      zone: "c",
      user: "ops",
      advertise: "[fd00::3]:7400",
      dataDir: "/srv/shardctl/",
    },
  ],
};

describe("parseInventory", () => {
  it("reads nodes with defaults, ~ and relative key files, and derived addresses", () => {
    const inv = parse(good);
    expect(inv.nodes).toEqual([
      {
        id: "n1",
        host: "10.0.0.1",
        port: 22,
        user: "shardctl",
        keyFile: "/home/op/.ssh/id_ed25519",
        zone: "a",
        capacity: { shards: 32, cpus: 4 },
        dataDir: "/var/lib/shardctl",
        hostKey: undefined,
        agentPort: 7400,
        listen: "0.0.0.0:7400",
        advertise: "10.0.0.1:7400",
      },
      {
        id: "n2",
        host: "node2.example",
        port: 2222,
        user: "shardctl",
        keyFile: "/etc/shardctl/keys/n2",
        zone: "b",
        capacity: { shards: 16 },
        dataDir: "/var/lib/shardctl",
        hostKey: FP,
        agentPort: 7500,
        listen: "0.0.0.0:7500",
        advertise: "node2.example:7500",
      },
      {
        id: "n3",
        host: "fd00::3",
        port: 22,
        user: "ops",
        keyFile: "/home/op/.ssh/id_ed25519",
        zone: "c",
        capacity: { shards: 64 },
        dataDir: "/srv/shardctl",
        hostKey: undefined,
        agentPort: 7400,
        listen: "0.0.0.0:7400",
        advertise: "[fd00::3]:7400",
      },
    ]);
  });

  it("names the node and the field of every problem", () => {
    const msg = problems({
      nodes: [
        { id: "n1", host: "10.0.0.1", user: "u", keyFile: "k", zone: "a", port: 70000 },
        { id: "n2", host: "10.0.0.2", user: "u", keyFile: "k", zone: "z" },
        { id: "n3", host: "10.0.0.3", user: "u", zone: "a" },
        { id: "n4", host: "10.0.0.4", user: "u", keyFile: "k", zone: "a", hostKey: "MD5:aa:bb" },
        { id: "n5", host: "10.0.0.5", user: "u", keyFile: "k", zone: "a", dataDir: "relative/dir" },
        { id: "n6", host: "10.0.0.6", user: "u", keyFile: "k", zone: "a", colour: "blue" },
      ],
    });
    expect(msg).toContain('node "n1" (nodes[0]).port:');
    expect(msg).toContain('node "n2" (nodes[1]).zone: "z" is not one of the configured zones (a, b, c)');
    expect(msg).toContain('node "n3" (nodes[2]).keyFile: required when no SSH agent is running');
    expect(msg).toContain('node "n4" (nodes[3]).hostKey: must be a fingerprint');
    expect(msg).toContain('node "n5" (nodes[4]).dataDir: must be an absolute path');
    expect(msg).toMatch(/node "n6" \(nodes\[5\]\)\.\(the node\): .*colour/);
  });

  it("says an empty file (or comments only) is empty, not that '(the node)' is null", () => {
    for (const text of ["", "\n\n", "# nodes to come\n"]) {
      expect(() => parseInventory(text, "inv.yaml", opts)).toThrow(
        /invalid inventory inv\.yaml:\n {2}the file is empty: expected `nodes:` with a list of nodes/,
      );
    }
  });

  it("refuses a dataDir that is the root directory however it is spelled", () => {
    for (const dataDir of ["/", "//", "///", "/.", "/./", "/.//."]) {
      const msg = problems({
        nodes: [{ id: "n1", host: "10.0.0.1", user: "u", keyFile: "k", zone: "a", dataDir }],
      });
      expect(msg, dataDir).toContain('node "n1" (nodes[0]).dataDir: must not be the root directory (/)');
    }
  });

  it("uses the SSH agent when there is no keyFile and an agent runs", () => {
    const inv = parse(
      { nodes: [{ id: "n1", host: "h", user: "u", zone: "a" }] },
      { ...opts, haveAgent: true },
    );
    expect(inv.nodes[0].keyFile).toBeUndefined();
  });

  it("refuses hostile hosts, users and paths", () => {
    const base = { id: "n1", user: "u", keyFile: "k", zone: "a" };
    expect(problems({ nodes: [{ ...base, host: "h; rm -rf /" }] })).toContain("(nodes[0]).host:");
    expect(problems({ nodes: [{ ...base, host: "-oProxyCommand=touch /tmp/x" }] })).toContain(
      "(nodes[0]).host:",
    );
    expect(problems({ nodes: [{ ...base, host: "h", user: "$(id)" }] })).toContain("(nodes[0]).user:");
    expect(problems({ nodes: [{ ...base, host: "h", dataDir: "/srv/a\nb" }] })).toContain(
      "control characters",
    );
    expect(problems({ nodes: [{ ...base, host: "h", dataDir: "/srv/../etc" }] })).toContain("`..`");
    // every deploy there failed at "wait for health" (ERR_INVALID_MODULE_SPECIFIER), after an upload called corrupted
    expect(problems({ nodes: [{ ...base, host: "h", dataDir: "/srv/back\\slash" }] })).toContain(
      "dataDir: must not contain a backslash (Node.js cannot load the agent's module from such a path)",
    );
    expect(problems({ nodes: [{ ...base, id: "../x", host: "h" }] })).toContain("nodes[0]).id:");
  });

  it("takes where a node reaches Consul from the node or the defaults, and refuses what is not an address", () => {
    const base = { user: "u", keyFile: "k", zone: "a" };
    const inv = parse({
      defaults: { consulAddr: "10.0.0.254:8500" },
      nodes: [
        { ...base, id: "n1", host: "h1" },
        { ...base, id: "n2", host: "h2", consulAddr: "https://consul.internal" },
      ],
    });
    expect(inv.nodes.map((n) => n.consulAddr)).toEqual(["10.0.0.254:8500", "https://consul.internal"]);
    expect(parse({ nodes: [{ ...base, id: "n1", host: "h1" }] }).nodes[0].consulAddr).toBeUndefined();
    for (const bad of ["a b:8500", "$(id):8500", "ftp://x:1", "x:8500/path", ""]) {
      expect(problems({ nodes: [{ ...base, id: "n1", host: "h1", consulAddr: bad }] })).toContain(
        "(nodes[0]).consulAddr:",
      );
    }
  });

  it("accepts quotes, spaces and $() in a dataDir: it is quoted wherever it is used", () => {
    const inv = parse({
      nodes: [{ id: "n1", host: "h", user: "u", keyFile: "k", zone: "a", dataDir: "/srv/it's $(x) `y`" }],
    });
    expect(inv.nodes[0].dataDir).toBe("/srv/it's $(x) `y`");
  });

  it("refuses duplicate ids, shared data directories and shared addresses", () => {
    const n = { user: "u", keyFile: "k", zone: "a" };
    expect(
      problems({
        nodes: [
          { ...n, id: "x", host: "h1" },
          { ...n, id: "x", host: "h2" },
        ],
      }),
    ).toContain('node "x" (nodes[1]).id: also used by nodes[0]');
    expect(
      problems({
        nodes: [
          { ...n, id: "x", host: "h1" },
          { ...n, id: "y", host: "h1", agentPort: 7401 },
        ],
      }),
    ).toContain("is also used by node x");
    expect(
      problems({
        nodes: [
          { ...n, id: "x", host: "h1" },
          { ...n, id: "y", host: "h2", advertise: "h1:7400" },
        ],
      }),
    ).toContain("h1:7400 is also the address of node x");
  });

  it("refuses listen and advertise ports outside 1..65535", () => {
    const base = { id: "n1", host: "h", user: "u", keyFile: "k", zone: "a" };
    for (const bad of ["0.0.0.0:0", "0.0.0.0:99999", "0.0.0.0:65536"])
      expect(problems({ nodes: [{ ...base, listen: bad }] })).toContain(
        'node "n1" (nodes[0]).listen: the port must be 1..65535',
      );
    expect(problems({ nodes: [{ ...base, advertise: "h:70000" }] })).toContain(
      'node "n1" (nodes[0]).advertise: the port must be 1..65535',
    );
    expect(parse({ nodes: [{ ...base, listen: "[::]:65535" }] }).nodes[0].listen).toBe("[::]:65535");
  });

  it("advertises the port the agent listens on when listen names one and advertise is not given", () => {
    const base = { id: "n1", host: "10.0.0.1", user: "u", keyFile: "k", zone: "a" };
    expect(parse({ nodes: [{ ...base, listen: "10.0.0.1:7500" }] }).nodes[0]).toMatchObject({
      agentPort: 7400,
      listen: "10.0.0.1:7500",
      advertise: "10.0.0.1:7500",
    });
    expect(parse({ nodes: [{ ...base, agentPort: 7600 }] }).nodes[0].advertise).toBe("10.0.0.1:7600");
  });

  it("catches a shared data directory or address however it is spelled", () => {
    const n = { user: "u", keyFile: "k", zone: "a" };
    expect(
      problems({
        nodes: [
          { ...n, id: "x", host: "h1", dataDir: "/srv/shardctl" },
          { ...n, id: "y", host: "h1", dataDir: "/srv//./shardctl/", agentPort: 7401 },
        ],
      }),
    ).toContain("/srv/shardctl on h1 is also used by node x");
    expect(
      problems({
        nodes: [
          { ...n, id: "x", host: "node1.example" },
          { ...n, id: "y", host: "NODE1.example", agentPort: 7401 },
        ],
      }),
    ).toContain("is also used by node x");
    expect(
      problems({
        nodes: [
          { ...n, id: "x", host: "h1", advertise: "agents.example:7400" },
          { ...n, id: "y", host: "h2", advertise: "Agents.Example:7400" },
        ],
      }),
    ).toContain("is also the address of node x");
  });

  it("refuses a file that is not an inventory", () => {
    expect(problems("nodes: [")).toMatch(/not valid YAML/);
    expect(problems({ nodes: [] })).toMatch(/nodes: must list at least one node/);
    expect(problems({ hosts: [] })).toMatch(/invalid inventory/);
    expect(problems("just a string")).toMatch(/invalid inventory/);
  });
});

describe("selectNodes", () => {
  it("picks the named nodes and refuses unknown names", () => {
    const inv = parse(good);
    expect(selectNodes(inv, undefined).map((n) => n.id)).toEqual(["n1", "n2", "n3"]);
    expect(selectNodes(inv, ["n3", "n1", "n3"]).map((n) => n.id)).toEqual(["n3", "n1"]);
    expect(() => selectNodes(inv, ["n1", "n9"])).toThrow(/^--nodes names "n9", not in the inventory/);
    expect(() => selectNodes(inv, ["n9"], "undeploy names")).toThrow(/^undeploy names "n9", not in/);
  });

  it("refuses a key file that is a directory or a device before anything is touched (/dev/zero was read without end)", () => {
    const d = newDir();
    for (const [keyFile, re] of [
      ["/dev/zero", /^the private key file \(keyFile\) \/dev\/zero is not a regular file$/],
      [d, /^the private key file \(keyFile\) .* is a directory$/],
    ] as const) {
      const inv = parse({ ...good, defaults: { ...good.defaults, keyFile } });
      expect(() => selectNodes(inv, ["n1"]), keyFile).toThrow(re);
    }
    // a missing one is that node's connect failure, as before
    const missing = parse({ ...good, defaults: { ...good.defaults, keyFile: join(d, "nope") } });
    expect(selectNodes(missing, ["n1"])).toHaveLength(1);
  });
});

describe("loadInventory", () => {
  it("reads with a bound: a directory, /dev/zero and a file over 1 MiB are UsageErrors naming the file", () => {
    // a directory was a bare "EISDIR"; /dev/zero was read without end
    const d = newDir();
    const big = join(d, "big.yaml");
    writeFileSync(big, "#".repeat(1024 * 1024 + 1));
    for (const [file, re] of [
      [d, /^the inventory .* is a directory$/],
      [big, /^the inventory .*big\.yaml is larger than 1 MiB/],
      ["/dev/zero", /^the inventory \/dev\/zero is larger than 1 MiB/],
      [join(d, "none.yaml"), /^cannot read the inventory .*none\.yaml: it does not exist$/],
    ] as const) {
      let err: unknown;
      try {
        loadInventory(file, opts);
      } catch (e) {
        err = e;
      }
      expect(err, file).toBeInstanceOf(UsageError);
      expect((err as UsageError).message).toMatch(re);
      expect((err as UsageError).hint).toMatch(/--inventory FILE/);
    }
  });
});
