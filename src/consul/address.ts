/**
 * Checks of the Consul address and token as given (CONSUL_HTTP_ADDR,
 * CONSUL_HTTP_TOKEN or the config file's consul section). Both are input: a
 * malformed one is a usage error (exit 2) that names where it came from, says
 * what is wrong and shows a valid value, before any request is made.
 *
 * Free of the Consul client, so that the config loader can use it without
 * loading that into every command.
 */
import { UsageError } from "../errors.js";

export interface ConsulEndpoint {
  /** As given (CONSUL_HTTP_ADDR or config): `host:port`, `http://host:port` or `https://host:port`. */
  addr: string;
  host: string;
  port: number;
  secure: boolean;
}

const ADDR_EXAMPLES = "e.g. 127.0.0.1:8500, consul.internal:8500 or https://consul.internal:8501";

/**
 * Parses CONSUL_HTTP_ADDR the way the consul CLI does: scheme optional, port
 * 8500 by default. `source` names where the value came from in the message.
 */
export function parseConsulAddr(addr: string, source = "CONSUL_HTTP_ADDR"): ConsulEndpoint {
  const raw = addr.trim();
  const bad = (what: string, hint = `use host:port or http(s)://host:port, ${ADDR_EXAMPLES}`) =>
    new UsageError(`${source} ${JSON.stringify(addr)} is not a Consul address: ${what}`, { hint });
  if (!raw) throw bad("it is empty");
  if (/\s/.test(raw)) throw bad("it contains whitespace");
  if (raw.startsWith("unix://")) {
    throw bad(
      "a unix socket is not supported",
      "point it at the agent's HTTP port instead, e.g. 127.0.0.1:8500",
    );
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(raw);
  if (scheme && !/^https?$/i.test(scheme[1]))
    throw bad(`the scheme ${scheme[1]}:// is not http:// or https://`);
  // A query, a fragment or credentials would be dropped without a word (the
  // token goes in CONSUL_HTTP_TOKEN).
  if (/[?#]/.test(raw)) throw bad("it has a query or fragment (? or #); give only the scheme, host and port");
  if (raw.includes("@"))
    throw bad("it holds credentials (user@); the ACL token goes in CONSUL_HTTP_TOKEN, not in the address");
  const withScheme = scheme ? raw : `http://${raw}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    const port = /:(\d+)$/.exec(raw)?.[1];
    throw bad(
      port !== undefined && Number(port) > 65535
        ? `port ${port} is not a TCP port (1 to 65535)`
        : "it is not host:port (a bad host name or a port that is not a number)",
    );
  }
  if (!url.hostname) throw bad("it has no host");
  if (url.pathname !== "/" && url.pathname !== "")
    throw bad(`it has a path (${url.pathname}); give only the scheme, host and port`);
  if (url.port === "0") throw bad("port 0 reaches nothing");
  // the HTTP client looks a bracketed IPv6 literal up as a host name (and failed on it as "not found")
  if (url.hostname.startsWith("["))
    throw bad(
      "an IPv6 address is not supported",
      "use an IPv4 address or a host name that resolves to the agent, e.g. 127.0.0.1:8500 or localhost:8500",
    );
  const secure = url.protocol === "https:";
  const port = url.port ? Number(url.port) : secure ? 443 : 8500;
  return { addr: raw, host: url.hostname.replace(/^\[|\]$/g, ""), port, secure };
}

/**
 * The first character of `text` outside printable ASCII (! to ~), as the hex
 * digits of its code point ("000A", "00E9"), or undefined: what may go into a
 * token header as it is (Consul's token, the agents' bearer token).
 */
export function nonPrintableAscii(text: string): string | undefined {
  const odd = [...text].find((c) => c < "!" || c > "~");
  return odd?.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
}

/**
 * Refuses a token that cannot be sent as the X-Consul-Token header or that
 * Consul could never know: one word of printable ASCII. (Without this check a
 * newline in the token surfaced as "cannot reach Consul", exit 1.)
 */
export function checkConsulToken(token: string, source = "CONSUL_HTTP_TOKEN"): void {
  const hint =
    "it is the SecretID of a Consul ACL token, one word, e.g. 3f2a9c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b (`consul acl token read -self` shows it)";
  if (/\s/.test(token)) {
    const where = /^\s|\s$/.test(token) ? "leading or trailing whitespace (a pasted newline?)" : "whitespace";
    throw new UsageError(`${source} holds ${where}; a Consul token is one word`, { hint });
  }
  const code = nonPrintableAscii(token);
  if (code !== undefined) {
    throw new UsageError(
      `${source} holds the character U+${code}, which no Consul token has (printable ASCII only)`,
      { hint },
    );
  }
}
