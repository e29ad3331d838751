import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  entryMatchesHost,
  fingerprintSha256,
  HostKeyError,
  hostKeyName,
  keyTypeOf,
  parseKnownHosts,
  preferredHostKeyAlgorithms,
  verifyHostKey,
} from "../../../src/cluster/known-hosts.js";
import { UsageError } from "../../../src/errors.js";

let dir: string;
interface Key {
  type: string;
  b64: string;
  blob: Buffer;
  /** What `ssh-keygen -lf` prints as the fingerprint. */
  fingerprint: string;
}
const keys: Record<string, Key> = {};

function keygen(name: string, type: string): Key {
  const file = join(dir, name);
  execFileSync("ssh-keygen", [
    "-q",
    "-t",
    type,
    ...(type === "rsa" ? ["-b", "2048"] : []),
    "-N",
    "",
    "-f",
    file,
  ]);
  const [t, b64] = readFileSync(`${file}.pub`, "utf8").split(" ");
  const fingerprint = execFileSync("ssh-keygen", ["-lf", `${file}.pub`], { encoding: "utf8" }).split(" ")[1];
  return { type: t, b64, blob: Buffer.from(b64, "base64"), fingerprint };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "shardctl-kh-"));
  keys.ed = keygen("ed", "ed25519");
  keys.ed2 = keygen("ed2", "ed25519");
  keys.ecdsa = keygen("ecdsa", "ecdsa");
  keys.rsa = keygen("rsa", "rsa");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

const policy = (knownHostsFile: string, extra: Partial<Parameters<typeof verifyHostKey>[3]> = {}) => ({
  knownHostsFile,
  acceptNew: false,
  ...extra,
});

describe("fingerprints", () => {
  it("match ssh-keygen -l for ed25519, ecdsa and rsa keys", () => {
    for (const k of Object.values(keys)) expect(fingerprintSha256(k.blob)).toBe(k.fingerprint);
  });

  it("read the key type from the blob", () => {
    expect(keyTypeOf(keys.ed.blob)).toBe("ssh-ed25519");
    expect(keyTypeOf(keys.rsa.blob)).toBe("ssh-rsa");
    expect(() => keyTypeOf(Buffer.from([0, 0, 0, 200, 1]))).toThrow();
    expect(() => keyTypeOf(Buffer.alloc(2))).toThrow();
  });
});

describe("known_hosts parsing and matching", () => {
  it("names a host as ssh does: bare on port 22, [host]:port otherwise", () => {
    expect(hostKeyName("10.0.0.1", 22)).toBe("10.0.0.1");
    expect(hostKeyName("10.0.0.1", 2222)).toBe("[10.0.0.1]:2222");
  });

  it("matches plain, bracketed, wildcard and negated patterns", () => {
    expect(entryMatchesHost("a.example,10.0.0.1", "10.0.0.1", 22)).toBe(true);
    expect(entryMatchesHost("[10.0.0.1]:2222", "10.0.0.1", 2222)).toBe(true);
    expect(entryMatchesHost("10.0.0.1", "10.0.0.1", 2222)).toBe(false);
    expect(entryMatchesHost("[10.0.0.1]:2222", "10.0.0.1", 22)).toBe(false);
    expect(entryMatchesHost("*.example", "node1.EXAMPLE", 22)).toBe(true);
    expect(entryMatchesHost("node?.example", "node12.example", 22)).toBe(false);
    expect(entryMatchesHost("*.example,!bad.example", "bad.example", 22)).toBe(false);
    // regex characters in a pattern are literal
    expect(entryMatchesHost("10.0.0.1", "10a0b0c1", 22)).toBe(false);
  });

  it("matches hashed entries written by ssh-keygen -H, on port 22 and others", () => {
    const f = file(
      "hashed",
      `10.9.8.7 ${keys.ed.type} ${keys.ed.b64}\n[10.9.8.7]:2200 ${keys.ecdsa.type} ${keys.ecdsa.b64}\n`,
    );
    execFileSync("ssh-keygen", ["-H", "-f", f], { stdio: "ignore" });
    const entries = parseKnownHosts(readFileSync(f, "utf8"));
    expect(entries).toHaveLength(2);
    expect(entries.every((e) => e.hosts.startsWith("|1|"))).toBe(true);
    expect(verifyHostKey("10.9.8.7", 22, keys.ed.blob, policy(f))).toBe("known");
    expect(verifyHostKey("10.9.8.7", 2200, keys.ecdsa.blob, policy(f))).toBe("known");
    expect(() => verifyHostKey("10.9.8.8", 22, keys.ed.blob, policy(f))).toThrow(/not known/);
  });

  it("matches host names without regard to case, hashed entries included (ssh hashes the lower-case name)", () => {
    const f = file(
      "hashed-case",
      `node1.example ${keys.ed.type} ${keys.ed.b64}\n[node2.example]:2200 ${keys.ecdsa.type} ${keys.ecdsa.b64}\n`,
    );
    execFileSync("ssh-keygen", ["-H", "-f", f], { stdio: "ignore" });
    expect(verifyHostKey("Node1.Example", 22, keys.ed.blob, policy(f))).toBe("known");
    expect(verifyHostKey("NODE2.example", 2200, keys.ecdsa.blob, policy(f))).toBe("known");
    expect(preferredHostKeyAlgorithms(f, "NODE2.example", 2200)).toEqual([keys.ecdsa.type]);
    // a key accepted for a mixed-case name is written as ssh would write it
    const g = file("accept-case", "");
    verifyHostKey("Node3.Example", 2200, keys.ed.blob, { ...policy(g), acceptNew: true });
    expect(readFileSync(g, "utf8")).toBe(`[node3.example]:2200 ${keys.ed.type} ${keys.ed.b64}\n`);
  });

  it("skips comments, blank lines, garbage and keys whose blob disagrees with the type", () => {
    const text = [
      "# comment",
      "",
      "host-only-field",
      `h1 ssh-rsa ${keys.ed.b64}`,
      `h2 ${keys.ed.type} not*base64`,
      `@unknown-marker h3 ${keys.ed.type} ${keys.ed.b64}`,
      `h4 ${keys.ed.type} ${keys.ed.b64} a comment`,
    ].join("\n");
    const entries = parseKnownHosts(text);
    expect(entries.map((e) => e.hosts)).toEqual(["h4"]);
    expect(entries[0].line).toBe(7);
  });
});

describe("verifyHostKey", () => {
  it("accepts a known key", () => {
    const f = file("known", `[h]:2222 ${keys.ed.type} ${keys.ed.b64}\n`);
    expect(verifyHostKey("h", 2222, keys.ed.blob, policy(f))).toBe("known");
  });

  it("refuses an unknown host with its fingerprint and how to accept it, writing nothing", () => {
    const f = file("empty", "");
    let err: unknown;
    try {
      verifyHostKey("h", 2222, keys.ed.blob, policy(f));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HostKeyError);
    const e = err as HostKeyError;
    expect(e.problem).toBe("unknown");
    expect(e.fingerprint).toBe(keys.ed.fingerprint);
    expect(e.message).toContain(keys.ed.fingerprint);
    expect(e.hint).toContain("--accept-new-host-keys");
    expect(readFileSync(f, "utf8")).toBe("");
  });

  it("appends an unknown key with --accept-new-host-keys, after which it is known", () => {
    const f = file("accept", `other ${keys.rsa.type} ${keys.rsa.b64}`); // no trailing newline
    const accepted: string[] = [];
    expect(
      verifyHostKey(
        "h",
        2222,
        keys.ed.blob,
        policy(f, { acceptNew: true, onAccepted: (l) => accepted.push(l) }),
      ),
    ).toBe("accepted");
    expect(accepted).toEqual([`[h]:2222 ${keys.ed.type} ${keys.ed.b64}`]);
    expect(readFileSync(f, "utf8").split("\n")).toEqual([
      `other ${keys.rsa.type} ${keys.rsa.b64}`,
      accepted[0],
      "",
    ]);
    expect(verifyHostKey("h", 2222, keys.ed.blob, policy(f))).toBe("known");
    expect(verifyHostKey("other", 22, keys.rsa.blob, policy(f))).toBe("known");
  });

  it("refuses a changed key always, even when accepting new keys, and leaves the file alone", () => {
    const text = `[h]:2222 ${keys.ed.type} ${keys.ed.b64}\n`;
    const f = file("changed", text);
    for (const acceptNew of [false, true]) {
      let err: HostKeyError | undefined;
      try {
        verifyHostKey("h", 2222, keys.ed2.blob, policy(f, { acceptNew }));
      } catch (e) {
        err = e as HostKeyError;
      }
      expect(err?.problem).toBe("changed");
      expect(err?.message).toMatch(/HOST KEY CHANGED/);
      expect(err?.fingerprint).toBe(keys.ed2.fingerprint);
      expect(err?.hint).toContain("ssh-keygen -R");
    }
    expect(readFileSync(f, "utf8")).toBe(text);
  });

  it("treats a key of another type for a known host as changed", () => {
    const f = file("othertype", `h ${keys.rsa.type} ${keys.rsa.b64}\n`);
    expect(() => verifyHostKey("h", 22, keys.ed.blob, policy(f, { acceptNew: true }))).toThrow(
      /HOST KEY CHANGED/,
    );
  });

  it("refuses a @revoked key", () => {
    const f = file(
      "revoked",
      `@revoked * ${keys.ed.type} ${keys.ed.b64}\nh ${keys.ed.type} ${keys.ed.b64}\n`,
    );
    expect(() => verifyHostKey("h", 22, keys.ed.blob, policy(f, { acceptNew: true }))).toThrow(/@revoked/);
  });

  it("lets a pinned fingerprint decide, without known_hosts", () => {
    const f = join(dir, "does-not-exist");
    expect(verifyHostKey("h", 22, keys.ed.blob, policy(f, { pinned: keys.ed.fingerprint }))).toBe("pinned");
    expect(() =>
      verifyHostKey("h", 22, keys.ed2.blob, policy(f, { pinned: keys.ed.fingerprint, acceptNew: true })),
    ).toThrow(/not the fingerprint pinned in the inventory/);
  });

  it("offers the known key types first, and only those for a known host", () => {
    const f = file("algos", `h ${keys.rsa.type} ${keys.rsa.b64}\n`);
    expect(preferredHostKeyAlgorithms(f, "h", 22)).toEqual(["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]);
    expect(preferredHostKeyAlgorithms(f, "unknown", 22)[0]).toBe("ssh-ed25519");
  });
});

describe("a known_hosts file that is not one", () => {
  it("is read with a bound: a directory or a file over 16 MiB is a UsageError naming it, for every use", () => {
    // a directory was a raw EISDIR (reported as a connection problem), a file of any size was read whole
    const sub = join(dir, "kh-dir");
    mkdirSync(sub, { recursive: true });
    const big = file("kh-big", "#".repeat(16 * 1024 * 1024 + 1));
    for (const [f, re] of [
      [sub, /^the known_hosts file .*kh-dir is a directory$/],
      [big, /^the known_hosts file .*kh-big is larger than 16 MiB/],
    ] as const) {
      for (const use of [
        () => preferredHostKeyAlgorithms(f, "h", 22),
        () => verifyHostKey("h", 22, keys.ed.blob, policy(f)),
        () => verifyHostKey("h", 22, keys.ed.blob, policy(f, { acceptNew: true })),
      ]) {
        let err: unknown;
        try {
          use();
        } catch (e) {
          err = e;
        }
        expect(err, f).toBeInstanceOf(UsageError);
        expect((err as UsageError).message).toMatch(re);
        expect((err as UsageError).hint).toMatch(/--known-hosts FILE/);
      }
    }
    expect(readFileSync(big, "utf8")).toHaveLength(16 * 1024 * 1024 + 1);
  });
});

describe("--accept-new-host-keys into a known_hosts path that cannot be made", () => {
  // mkdirSync's recursive threw a raw ENOTDIR / ENAMETOOLONG, and never returned for /proc/self/x
  const cases: [string, () => string, RegExp][] = [
    [
      "a path through a regular file",
      () => join(file("kh-afile", "x"), "known_hosts"),
      /kh-afile exists and is not a directory/,
    ],
    ["a name too long", () => join(dir, "a".repeat(300), "known_hosts"), /too long \(ENAMETOOLONG\)/],
  ];
  if (process.platform === "linux")
    cases.push([
      "a place where no directory can be made",
      () => "/proc/self/x/known_hosts",
      /no directory can be made there \(ENOENT\)/,
    ]);
  for (const [what, path, re] of cases) {
    it(`${what}: a UsageError naming the directory, nothing accepted`, () => {
      const f = path();
      const accepted: string[] = [];
      let err: unknown;
      try {
        verifyHostKey(
          "h",
          22,
          keys.ed.blob,
          policy(f, { acceptNew: true, onAccepted: (l) => accepted.push(l) }),
        );
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as UsageError).message).toMatch(/^cannot create the directory of the known_hosts file /);
      expect((err as UsageError).message).toMatch(re);
      expect((err as UsageError).hint).toMatch(/--known-hosts FILE/);
      expect(accepted).toEqual([]);
    });
  }
});
