/**
 * SSH host key verification, as OpenSSH does it: the key a server presents is
 * checked against `~/.ssh/known_hosts` (plain and hashed `|1|salt|hash`
 * entries, `[host]:port` for ports other than 22, wildcards, negations,
 * `@revoked`) or against a fingerprint pinned in the inventory.
 *
 * - a matching entry (or pin): accepted;
 * - a host known with another key: refused, always (a changed key is the
 *   man-in-the-middle case; --accept-new-host-keys does not cover it);
 * - a host not known at all: refused with its fingerprint — exactly as
 *   `ssh-keygen -l` prints it — unless new keys are accepted, which appends
 *   the key to known_hosts.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { appendFileSync, existsSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { UsageError } from "../errors.js";
import { makeDirsFor } from "../fs-paths.js";
import { readInputBytes } from "../input-file.js";

export interface KnownHostEntry {
  marker?: "@revoked" | "@cert-authority";
  /** Comma-separated patterns, or one hashed `|1|salt|hash` name. */
  hosts: string;
  keyType: string;
  key: Buffer;
  line: number;
}

export type HostKeyProblem = "unknown" | "changed" | "revoked" | "pin-mismatch";

export class HostKeyError extends Error {
  constructor(
    readonly problem: HostKeyProblem,
    message: string,
    readonly fingerprint: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = "HostKeyError";
  }
}

export function defaultKnownHostsFile(home = homedir()): string {
  return join(home, ".ssh", "known_hosts");
}

/** `SHA256:` and the unpadded base64 of the key blob's SHA-256, as `ssh-keygen -l` prints it. */
export function fingerprintSha256(keyBlob: Buffer): string {
  return "SHA256:" + createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "");
}

/** The key type named inside an SSH public key blob (its first string). */
export function keyTypeOf(keyBlob: Buffer): string {
  if (keyBlob.length < 4) throw new Error("not an SSH public key blob");
  const len = keyBlob.readUInt32BE(0);
  if (len < 1 || len > 64 || 4 + len > keyBlob.length) throw new Error("not an SSH public key blob");
  return keyBlob.subarray(4, 4 + len).toString("latin1");
}

/**
 * The name known_hosts files use: `host` on port 22, `[host]:port` otherwise —
 * in lower case, as ssh writes (and hashes) it: a hashed entry for
 * `node1.example` must match the inventory's `Node1.Example`.
 */
export function hostKeyName(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

export function parseKnownHosts(text: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry["marker"];
    if (fields[0] === "@revoked" || fields[0] === "@cert-authority")
      marker = fields.shift() as KnownHostEntry["marker"];
    else if (fields[0].startsWith("@")) continue; // a marker this code does not know: ignore the line, as ssh does
    if (fields.length < 3) continue;
    const [hosts, keyType, b64] = fields;
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) continue;
    const key = Buffer.from(b64, "base64");
    try {
      if (keyTypeOf(key) !== keyType) continue;
    } catch {
      continue;
    }
    out.push({ marker, hosts, keyType, key, line: i + 1 });
  }
  return out;
}

/** OpenSSH's `match_pattern`: `*` any run, `?` one character; case-insensitive for host names. */
function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(
    "^" +
      pattern
        .split("")
        .map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[\\^$.|+()[\]{}]/g, "\\$&")))
        .join("") +
      "$",
    "i",
  );
  return re.test(name);
}

function hashedMatch(hashed: string, name: string): boolean {
  const parts = hashed.split("|");
  // |1|base64(salt)|base64(hmac-sha1(salt, name))
  if (parts.length !== 4 || parts[1] !== "1") return false;
  const salt = Buffer.from(parts[2], "base64");
  const want = Buffer.from(parts[3], "base64");
  const got = createHmac("sha1", salt).update(name).digest();
  return want.length === got.length && timingSafeEqual(want, got);
}

/** Whether an entry's host field names `host` on `port`. */
export function entryMatchesHost(hosts: string, host: string, port: number): boolean {
  const name = hostKeyName(host, port);
  if (hosts.startsWith("|")) return hashedMatch(hosts, name);
  let matched = false;
  for (const raw of hosts.split(",")) {
    const negated = raw.startsWith("!");
    const pattern = negated ? raw.slice(1) : raw;
    if (globMatch(pattern, name)) {
      if (negated) return false; // a negated match vetoes the whole line
      matched = true;
    }
  }
  return matched;
}

export interface HostKeyPolicy {
  knownHostsFile: string;
  /** A fingerprint pinned in the inventory (`SHA256:...`): when set, it alone decides. */
  pinned?: string;
  acceptNew: boolean;
  /** Told when a new key was appended to known_hosts. */
  onAccepted?: (line: string) => void;
}

export type HostKeyDecision = "known" | "pinned" | "accepted";

/** Far above any real known_hosts (a line is under 1 KiB): reading stops past this. */
export const MAX_KNOWN_HOSTS_BYTES = 16 * 1024 * 1024;

const KNOWN_HOSTS_HINT = "give the known_hosts file with --known-hosts FILE (default: ~/.ssh/known_hosts)";

/**
 * The known_hosts file's bytes (empty when there is none), read with a bound: a directory, or
 * /dev/zero given as --known-hosts, is a UsageError naming the file rather than a read without end.
 */
export function readKnownHosts(file: string): Buffer {
  if (!existsSync(file)) return Buffer.alloc(0);
  try {
    return readInputBytes(file, "the known_hosts file", MAX_KNOWN_HOSTS_BYTES, {
      tooLarge: () =>
        new UsageError(
          `the known_hosts file ${file} is larger than 16 MiB, far more than host keys take (a device, or another file?)`,
        ),
    });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    throw new UsageError(err.message, { hint: KNOWN_HOSTS_HINT, cause: err });
  }
}

/** The known_hosts entries for a host (not @cert-authority lines). */
export function entriesFor(file: string, host: string, port: number): KnownHostEntry[] {
  return parseKnownHosts(readKnownHosts(file).toString("utf8")).filter(
    (e) => e.marker !== "@cert-authority" && entryMatchesHost(e.hosts, host, port),
  );
}

/**
 * The host key algorithms to offer, with the types known_hosts holds for the
 * host first, so that the server presents a key we can check (what OpenSSH
 * does); the rest follow so that an unknown host still gets a key to report.
 */
export function preferredHostKeyAlgorithms(file: string, host: string, port: number): string[] {
  const all = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
  ];
  const known = new Set<string>();
  for (const e of entriesFor(file, host, port)) {
    if (e.marker) continue;
    if (e.keyType === "ssh-rsa") ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"].forEach((a) => known.add(a));
    else known.add(e.keyType);
  }
  if (known.size === 0) return all;
  // only the known types: a server that cannot present one of them has a changed key
  return all.filter((a) => known.has(a));
}

export function verifyHostKey(
  host: string,
  port: number,
  keyBlob: Buffer,
  policy: HostKeyPolicy,
): HostKeyDecision {
  const fingerprint = fingerprintSha256(keyBlob);
  const name = hostKeyName(host, port);
  const keyType = keyTypeOf(keyBlob);
  if (policy.pinned) {
    if (policy.pinned === fingerprint) return "pinned";
    throw new HostKeyError(
      "pin-mismatch",
      `the host key of ${name} is ${keyType} ${fingerprint}, not the fingerprint pinned in the inventory (${policy.pinned}); refusing to connect`,
      fingerprint,
      "if the host was really reinstalled, check the new key out of band (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host) and update hostKey in the inventory",
    );
  }
  const entries = entriesFor(policy.knownHostsFile, host, port);
  if (entries.some((e) => e.marker === "@revoked" && e.key.equals(keyBlob))) {
    throw new HostKeyError(
      "revoked",
      `the host key of ${name} (${keyType} ${fingerprint}) is marked @revoked in ${policy.knownHostsFile}`,
      fingerprint,
      "the host must get a new host key",
    );
  }
  const plain = entries.filter((e) => !e.marker);
  if (plain.some((e) => e.key.equals(keyBlob))) return "known";
  if (plain.length > 0) {
    const lines = plain.map((e) => e.line).join(", ");
    throw new HostKeyError(
      "changed",
      `HOST KEY CHANGED for ${name}: it presents ${keyType} ${fingerprint}, but ${policy.knownHostsFile} (line ${lines}) holds another key. Someone may be intercepting the connection; refusing to connect`,
      fingerprint,
      `if the host was really reinstalled, check the new key out of band, then remove the old one with \`ssh-keygen -R '${name}' -f ${policy.knownHostsFile}\` (--accept-new-host-keys never replaces a changed key)`,
    );
  }
  if (!policy.acceptNew) {
    throw new HostKeyError(
      "unknown",
      `the host key of ${name} is not known: ${keyType} ${fingerprint}`,
      fingerprint,
      `check the fingerprint out of band (\`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub\` on the host), then re-run with --accept-new-host-keys (appends it to ${policy.knownHostsFile}) or pin it as hostKey: ${fingerprint} in the inventory`,
    );
  }
  const line = `${name} ${keyType} ${keyBlob.toString("base64")}`;
  // not mkdirSync's recursive: a path through a file is a raw ENOTDIR, and /proc/self/x never returns
  makeDirsFor(
    dirname(policy.knownHostsFile),
    "the directory of the known_hosts file",
    KNOWN_HOSTS_HINT,
    0o700,
  );
  const current = readKnownHosts(policy.knownHostsFile);
  const sep = current.length > 0 && current[current.length - 1] !== 0x0a ? "\n" : "";
  appendFileSync(policy.knownHostsFile, sep + line + "\n", { mode: 0o600 });
  policy.onAccepted?.(line);
  return "accepted";
}
