/**
 * How deploy reaches a node: one `Executor` interface (run an argv, upload a
 * file, close) with an SSH implementation (ssh2) and a local one side by side,
 * as TiUP does — but unlike TiUP, every remote command line is built from an
 * argv array with POSIX single-quote quoting (`shellJoin`), never by pasting
 * strings, and the SSH host key is always verified (see known-hosts.ts).
 *
 * Nothing here logs: the caller decides what to show. A private key is read
 * into memory and handed to ssh2; it never appears in an error message.
 */
import { spawn } from "node:child_process";
import { chmod, copyFile } from "node:fs/promises";
import { Client, type ClientChannel, type ConnectConfig, type SFTPWrapper } from "ssh2";
import { errorMessage } from "../errors.js";
import { readInputBytes } from "../input-file.js";
import { MAX_KEY_FILE_BYTES } from "./inventory.js";

export interface ExecOptions {
  /** Bytes written to the command's standard input (then closed). Secrets go here, never into argv. */
  stdin?: string | Buffer;
  /**
   * Kill the command, and every process it started that stayed in its process group, after this
   * long (default 60 s); the call then fails with "did not finish within …".
   */
  timeoutMs?: number;
}

export interface ExecResult {
  /** Exit status; -1 when the command was killed by a signal or timed out. */
  code: number;
  stdout: string;
  stderr: string;
}

export interface UploadOptions {
  /** File mode of the created file (default 0644). */
  mode?: number;
  onProgress?: (sentBytes: number, totalBytes: number) => void;
}

export interface Executor {
  /** Where the commands run, for messages: `user@host:port` or `local`. */
  readonly target: string;
  /** Runs argv[0] with the rest as its arguments; every element is quoted, none is interpreted. */
  exec(argv: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  upload(localPath: string, remotePath: string, opts?: UploadOptions): Promise<void>;
  /** False once the connection is gone (a rollback then needs a new one). */
  isOpen(): boolean;
  close(): Promise<void>;
}

/** The most output kept from one command (the rest is dropped, with a marker). */
const MAX_OUTPUT = 1 << 20;

const DEFAULT_TIMEOUT_MS = 60_000;

function timeoutError(argv: readonly string[], target: string, timeoutMs: number, how: string): Error {
  return new Error(`\`${argv[0]}\` on ${target} did not finish within ${timeoutMs / 1000} s (${how})`);
}

/**
 * How every command runs on a node: `sh -c REMOTE_RUN_SCRIPT sh SECONDS argv...`.
 *
 * sshd does not end a command when its channel or its whole connection goes
 * away: without a terminal nothing hangs up, so a command the caller gave up
 * on — or lost with the connection — would keep running on the node (a
 * half-done `ctl.sh stop` racing the rollback's `ctl.sh start`), and closing
 * the channel does not even end the call until the command exits. So the node
 * side enforces both itself:
 * - the command runs under coreutils' timeout(1), in a process group of its
 *   own: at the deadline the whole group gets SIGTERM, then SIGKILL 5 s later
 *   (what it detached on purpose — ctl.sh's setsid'd supervisor — is not in it);
 * - a watcher polls, once a second, the sshd process of this session (the
 *   parent of the session leader, read from /proc): when it is gone, the
 *   connection is, and the group gets SIGTERM (then SIGKILL as above). Gone
 *   includes a zombie — where init does not reap orphans at once (containers,
 *   minimal VMs) the ended sshd stays in /proc as one —, a pid reused by
 *   another process (its start time differs), and a session leader that was
 *   handed to another parent. The session is read first thing, without a
 *   fork; if it is gone already (the leader's parent is init: the connection
 *   was cut before the command started), the command is not run at all
 *   (exit 255), since nothing would ever stop it.
 * Standard input goes through fd 3 because an asynchronous command of a
 * non-interactive shell otherwise reads /dev/null. Without timeout(1) the
 * command simply runs (deploy's probe requires coreutils); without /proc there
 * is no watcher, and the deadline still holds.
 */
export const REMOTE_RUN_SCRIPT = `t=$1
shift
# field VAR PID N: field N of /proc/PID/stat after "pid (comm) " into VAR ("" when unreadable), without
# a fork: the session is read before anything else, so that a connection cut at once is seen as such
field() {
  _l=
  { read -r _l < "/proc/$2/stat"; } 2>/dev/null
  _l=\${_l##*) }
  _v=
  _i=0
  for _w in $_l; do
    _i=$((_i + 1))
    if [ "$_i" = "$3" ]; then _v=$_w; break; fi
  done
  eval "$1=\\$_v"
}
leader=
anchor=
born=
field leader $$ 4
[ -n "$leader" ] && field anchor "$leader" 2
# the session's sshd is gone already (its leader was handed to init): the connection was cut before
# the command could start, and nothing would ever stop it
if [ "$anchor" = 1 ]; then
  echo "the SSH session ended before the command started; it was not run" >&2
  exit 255
fi
[ -n "$anchor" ] && field born "$anchor" 20
command -v timeout >/dev/null 2>&1 || exec "$@"
exec 3<&0
timeout -k 5 "$t" "$@" <&3 3<&- &
c=$!
exec 3<&-
w=
if [ -n "$anchor" ]; then
  (
    while kill -0 "$c" 2>/dev/null; do
      field st "$anchor" 1
      field b "$anchor" 20
      field p "$leader" 2
      if [ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ] || [ "$b" != "$born" ] || [ "$p" != "$anchor" ]; then
        kill -TERM "$c" 2>/dev/null
        exit 0
      fi
      sleep 1
    done
  ) </dev/null >/dev/null 2>&1 &
  w=$!
fi
wait "$c"
rc=$?
[ -n "$w" ] && kill "$w" 2>/dev/null
exit "$rc"
`;

/** Exit statuses of timeout(1) for a command it ended (124: SIGTERM did it, 137: SIGKILL had to). */
const KILLED_BY_TIMEOUT = new Set([124, 137]);

/**
 * Quotes one word for a POSIX shell: safe characters pass as they are, anything
 * else is wrapped in single quotes, inside which only `'` itself needs care
 * (closed, escaped, reopened). `$()`, backticks, newlines and globs stay literal.
 */
export function shellQuote(word: string): string {
  if (word.includes("\0")) throw new Error("a shell word cannot contain a NUL byte");
  if (word === "") return "''";
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** An argv as one command line for `sh` (what an SSH server hands to the user's login shell). */
export function shellJoin(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error("an empty command");
  return argv.map(shellQuote).join(" ");
}

function collect(limit: number) {
  const chunks: Buffer[] = [];
  let size = 0;
  let dropped = false;
  return {
    push(b: Buffer) {
      if (size >= limit) {
        dropped = true;
        return;
      }
      const part = b.subarray(0, limit - size);
      if (part.length < b.length) dropped = true;
      chunks.push(part);
      size += part.length;
    },
    text() {
      return Buffer.concat(chunks).toString("utf8") + (dropped ? "\n[output truncated]" : "");
    },
  };
}

/** Sends sig to a process group, if it still exists. */
function killGroup(pgid: number | undefined, sig: NodeJS.Signals): void {
  if (!pgid) return;
  try {
    process.kill(-pgid, sig);
  } catch {
    // gone already
  }
}

/**
 * Runs commands on this machine (no shell: argv goes to execve as it is). Each
 * command leads a process group (and session) of its own, so that a timeout
 * kills what it started too — a grandchild holding its output open would
 * otherwise keep the call waiting — and a Ctrl-C at the terminal does not
 * reach it (the caller decides what an interruption stops).
 */
export class LocalExecutor implements Executor {
  readonly target = "local";

  exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], detached: true });
      const out = collect(MAX_OUTPUT);
      const err = collect(MAX_OUTPUT);
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        killGroup(child.pid, "SIGTERM");
        setTimeout(() => killGroup(child.pid, "SIGKILL"), 5000).unref();
        reject(timeoutError(argv, this.target, timeoutMs, "it was killed, with what it started"));
      }, timeoutMs);
      child.stdout.on("data", (b: Buffer) => out.push(b));
      child.stderr.on("data", (b: Buffer) => err.push(b));
      child.stdin.on("error", () => {}); // a command that does not read its input
      child.on("error", (e) => {
        clearTimeout(timer);
        if (!settled) reject(e);
        settled = true;
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        if (!settled) resolve({ code: code ?? -1, stdout: out.text(), stderr: err.text() });
        settled = true;
      });
      child.stdin.end(opts.stdin);
    });
  }

  async upload(localPath: string, remotePath: string, opts: UploadOptions = {}): Promise<void> {
    await copyFile(localPath, remotePath);
    await chmod(remotePath, opts.mode ?? 0o644);
  }

  isOpen(): boolean {
    return true;
  }

  async close(): Promise<void> {}
}

export interface SshConnectOptions {
  host: string;
  port: number;
  user: string;
  /** A private key file; without it the SSH agent (agentSocket / SSH_AUTH_SOCK) is used. */
  keyFile?: string;
  agentSocket?: string;
  /**
   * Decides on the server's host key (the raw key blob). Resolve true to go on;
   * throw to refuse — the thrown error is what `connect` rejects with.
   */
  verifyHostKey: (keyBlob: Buffer) => Promise<true>;
  /** Host key algorithms to offer, most preferred first (the ones known_hosts holds for this host). */
  hostKeyAlgorithms?: string[];
  readyTimeoutMs?: number;
}

/** An SSH connection to one node. */
export class SshExecutor implements Executor {
  private sftpSession?: Promise<SFTPWrapper>;
  private closed = false;
  /** Operations in flight, failed at once when the connection drops (ssh2 may never call them back). */
  private readonly pending = new Set<(err: Error) => void>();

  private constructor(
    private readonly client: Client,
    readonly target: string,
  ) {
    client.on("close", () => {
      this.closed = true;
      const lost = new Error(`the connection to ${this.target} was lost`);
      for (const fail of [...this.pending]) fail(lost);
      this.pending.clear();
    });
  }

  /** Runs op, failing it if the connection drops first. */
  private guard<T>(op: (resolve: (v: T) => void, reject: (e: Error) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new Error(`the connection to ${this.target} is closed`));
      let settled = false;
      const fail = (e: Error) => {
        if (settled) return;
        settled = true;
        this.pending.delete(fail);
        reject(e);
      };
      this.pending.add(fail);
      op((v) => {
        if (settled) return;
        settled = true;
        this.pending.delete(fail);
        resolve(v);
      }, fail);
    });
  }

  static async connect(opts: SshConnectOptions): Promise<SshExecutor> {
    const target = `${opts.user}@${opts.host}:${opts.port}`;
    const config: ConnectConfig = {
      host: opts.host,
      port: opts.port,
      username: opts.user,
      readyTimeout: opts.readyTimeoutMs ?? 15_000,
      keepaliveInterval: 10_000,
      keepaliveCountMax: 3,
    };
    if (opts.keyFile) {
      try {
        // bounded: /dev/zero in its place must not be read until memory runs out
        config.privateKey = readInputBytes(opts.keyFile, "the private key file", MAX_KEY_FILE_BYTES);
      } catch (err) {
        throw new Error(errorMessage(err));
      }
    } else {
      const sock = opts.agentSocket ?? process.env.SSH_AUTH_SOCK;
      if (!sock) throw new Error("no keyFile and no SSH agent (SSH_AUTH_SOCK is not set)");
      config.agent = sock;
    }
    if (opts.hostKeyAlgorithms?.length) {
      config.algorithms = { serverHostKey: opts.hostKeyAlgorithms as never };
    }
    const client = new Client();
    // Errors after the first (e.g. a reset arriving after an auth failure, or mid-session) must not
    // crash the process: the connect promise or the channel in use reports them.
    client.on("error", () => {});
    let hostKeyError: unknown;
    config.hostVerifier = (key: Buffer, verify: (ok: boolean) => void) => {
      opts.verifyHostKey(key).then(
        () => verify(true),
        (err) => {
          hostKeyError = err;
          verify(false);
        },
      );
    };
    return new Promise<SshExecutor>((resolve, reject) => {
      const onError = (err: Error & { level?: string; code?: string }) => {
        client.removeListener("ready", onReady);
        client.end();
        if (hostKeyError) return reject(hostKeyError);
        reject(translateConnectError(err, target, Boolean(opts.keyFile)));
      };
      const onReady = () => {
        client.removeListener("error", onError);
        resolve(new SshExecutor(client, target));
      };
      client.once("error", onError);
      client.once("ready", onReady);
      try {
        client.connect(config);
      } catch (err) {
        // ssh2 throws synchronously on a key it cannot parse (encrypted, unknown format)
        reject(new Error(`cannot use the private key ${opts.keyFile ?? "(agent)"}: ${errorMessage(err)}`));
      }
    });
  }

  /** How long past its deadline a command may take to report back before the call gives up on the node. */
  static answerGraceMs = 10_000;

  exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    // the deadline travels with the command: the node kills it there (REMOTE_RUN_SCRIPT)
    const command = shellJoin(["sh", "-c", REMOTE_RUN_SCRIPT, "sh", String(timeoutMs / 1000), ...argv]);
    return this.guard<ExecResult>((resolve, reject) => {
      const started = Date.now();
      this.client.exec(command, (err: Error | undefined, stream: ClientChannel) => {
        if (err) return reject(new Error(`cannot run a command on ${this.target}: ${err.message}`));
        const out = collect(MAX_OUTPUT);
        const errOut = collect(MAX_OUTPUT);
        // A node that does not report back even after its own deadline: give up without waiting for
        // the channel to close (sshd closes it only once the command has exited).
        const timer = setTimeout(() => {
          reject(timeoutError(argv, this.target, timeoutMs, "and the node did not answer after that"));
          stream.close();
        }, timeoutMs + SshExecutor.answerGraceMs);
        stream.on("data", (b: Buffer) => out.push(b));
        stream.stderr.on("data", (b: Buffer) => errOut.push(b));
        let code: number | null = null;
        stream.on("exit", (c: number | null) => (code = c));
        stream.on("close", () => {
          clearTimeout(timer);
          if (code !== null && KILLED_BY_TIMEOUT.has(code) && Date.now() - started >= timeoutMs)
            return reject(
              timeoutError(argv, this.target, timeoutMs, "it was killed there, with what it started"),
            );
          if (this.closed && code === null)
            return reject(
              new Error(`the connection to ${this.target} was lost while running \`${argv[0]}\``),
            );
          resolve({ code: code ?? -1, stdout: out.text(), stderr: errOut.text() });
        });
        stream.end(opts.stdin);
      });
    });
  }

  private sftp(): Promise<SFTPWrapper> {
    this.sftpSession ??= this.guard<SFTPWrapper>((resolve, reject) =>
      this.client.sftp((err, sftp) =>
        err ? reject(new Error(`no SFTP on ${this.target}: ${err.message}`)) : resolve(sftp),
      ),
    );
    return this.sftpSession;
  }

  /** Fails an upload that makes no progress for this long (a silently dead link). */
  static uploadStallMs = 30_000;

  async upload(localPath: string, remotePath: string, opts: UploadOptions = {}): Promise<void> {
    const sftp = await this.sftp();
    await this.guard<void>((resolve, reject) => {
      let stall: NodeJS.Timeout;
      const arm = () => {
        clearTimeout(stall);
        stall = setTimeout(() => {
          reject(
            new Error(
              `the upload to ${this.target} made no progress for ${SshExecutor.uploadStallMs / 1000} s`,
            ),
          );
          this.client.end();
        }, SshExecutor.uploadStallMs);
      };
      arm();
      sftp.fastPut(
        localPath,
        remotePath,
        {
          mode: opts.mode ?? 0o644,
          step: (sent: number, _chunk: number, total: number) => {
            arm();
            opts.onProgress?.(sent, total);
          },
        },
        (err) => {
          clearTimeout(stall);
          if (!err) return resolve();
          if (this.closed)
            return reject(new Error(`the connection to ${this.target} was lost during the upload`));
          reject(new Error(`upload to ${remotePath} failed: ${err.message}`));
        },
      );
    });
  }

  isOpen(): boolean {
    return !this.closed;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 2000);
      this.client.once("close", () => {
        clearTimeout(t);
        resolve();
      });
      this.client.end();
    });
  }
}

function translateConnectError(
  err: Error & { level?: string; code?: string },
  target: string,
  withKeyFile: boolean,
): Error {
  const code = err.code;
  if (code === "ECONNREFUSED")
    return new Error(`cannot connect to ${target}: connection refused (is sshd running there?)`);
  if (code === "EHOSTUNREACH" || code === "ENETUNREACH")
    return new Error(`cannot connect to ${target}: host unreachable`);
  if (code === "ENOTFOUND" || code === "EAI_AGAIN")
    return new Error(`cannot connect to ${target}: unknown host name`);
  if (code === "ECONNRESET") return new Error(`cannot connect to ${target}: the connection was reset`);
  if (/no matching host key/i.test(err.message)) {
    return new Error(
      `${target} offers none of the host key types known_hosts holds for it: its host key may have changed; refusing to connect`,
    );
  }
  if (err.level === "client-authentication") {
    return new Error(
      `${target} refused the ${withKeyFile ? "key in keyFile" : "keys of the SSH agent"} (authentication failed)`,
    );
  }
  if (err.level === "client-timeout" || /Timed out/i.test(err.message)) {
    return new Error(`cannot connect to ${target}: no SSH handshake within the timeout`);
  }
  return new Error(`cannot connect to ${target}: ${err.message}`);
}
