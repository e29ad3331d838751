/**
 * The few error classes shardctl uses, and the exit codes they map to.
 * One top-level handler (bin/shardctl.ts) prints them: a UserError prints its
 * message and what to do next, never a stack; anything else is a bug.
 */

export const ExitCode = {
  Ok: 0,
  /** The operation was attempted and failed (I/O, a remote refused, a check failed). */
  Failed: 1,
  /** The command line or an input file is malformed. Nothing was changed. */
  Usage: 2,
  /** A precondition is not met: stale plan, store not initialised, lock held. Nothing was changed. */
  Precondition: 3,
  /**
   * Stopped by Ctrl-C (SIGINT, 128 + 2, as a shell reports a process the signal
   * ended) after it finished or undid the step in flight: see the command's help.
   */
  Interrupted: 130,
  /** The same, stopped by SIGTERM (128 + 15). */
  Terminated: 143,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** An error the user can act on: printed as `error: <message>` plus `hint`, no stack. */
export class UserError extends Error {
  readonly exitCode: ExitCode;
  readonly hint?: string;
  constructor(message: string, opts: { hint?: string; exitCode?: ExitCode; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = "UserError";
    this.exitCode = opts.exitCode ?? ExitCode.Failed;
    this.hint = opts.hint;
  }
}

/** Malformed input: a bad flag value, key, file or record. Exit code 2. */
export class UsageError extends UserError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { ...opts, exitCode: ExitCode.Usage });
    this.name = "UsageError";
  }
}

/** A precondition failed (stale plan, missing store, lock held). Exit code 3. */
export class PreconditionError extends UserError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { ...opts, exitCode: ExitCode.Precondition });
    this.name = "PreconditionError";
  }
}

/**
 * The stored location map is damaged (or holds keys shardctl does not write): every store's
 * error for it, so that `init --force` can recognise it and replace the map
 * (`LocationStore.replaceCorruptMap`). `why` says what is wrong.
 */
export class CorruptLocationMapError extends UserError {
  constructor(
    message: string,
    readonly why: string,
    opts: { hint?: string } = {},
  ) {
    super(message, opts);
    this.name = "CorruptLocationMapError";
  }
}

/**
 * The command was interrupted (SIGINT, SIGTERM) and stopped at a safe point. Exit code 130
 * (SIGINT), or 128 + the number of the signal that stopped it (143 for SIGTERM).
 */
export class InterruptedError extends UserError {
  constructor(message: string, opts: { hint?: string; cause?: unknown; exitCode?: ExitCode } = {}) {
    super(message, { ...opts, exitCode: opts.exitCode ?? ExitCode.Interrupted });
    this.name = "InterruptedError";
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
