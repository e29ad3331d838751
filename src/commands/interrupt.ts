/**
 * Ctrl-C (SIGINT) or SIGTERM during `migrate --apply` and `reshard --apply`.
 * The first signal does not end the process: the coordinator stops at its
 * next safe point (before the commit it rolls back — the source unfenced, the
 * target's copy dropped, the journal record ended as aborted; after the
 * commit it finishes the activation and ends the record as done), starts
 * nothing more, and the command exits 128 + the signal's number (130 for
 * SIGINT, 143 for SIGTERM, as a shell reports a process the signal ended). A
 * second signal ends the process at once, by that signal, leaving the record
 * open for `shardctl migrations --recover`.
 *
 * SIGTERM is what a service manager, `timeout` or a CI runner sends to stop a
 * command: without the handler it would end the process between a fence and
 * its commit, leaving the shard refusing writes until a recovery.
 */
import type { Writable } from "node:stream";
import { ExitCode } from "../errors.js";

export const INTERRUPT_SIGNALS = ["SIGINT", "SIGTERM"] as const;
export type InterruptSignal = (typeof INTERRUPT_SIGNALS)[number];

/** 128 + the signal's number: the exit status of a command a signal stopped. */
export const INTERRUPT_EXIT_CODES: Record<InterruptSignal, ExitCode> = {
  SIGINT: ExitCode.Interrupted,
  SIGTERM: ExitCode.Terminated,
};

export interface Interrupt {
  /** Why the command was interrupted ("interrupted (SIGINT)"), or undefined while it was not. */
  readonly reason: () => string | undefined;
  /** The exit status for the first signal received (130 or 143), or undefined while none was. */
  readonly exitCode: () => ExitCode | undefined;
  /** Removes the handlers (the default disposition is back: a signal ends the process). */
  readonly remove: () => void;
}

/** What the first signal prints after "SIGINT: " (or "SIGTERM: "). */
export function interruptHint(sig: InterruptSignal): string {
  const again = sig === "SIGINT" ? "press Ctrl-C again" : "send SIGTERM again";
  return `finishing the step in flight; ${again} to exit now (then run \`shardctl migrations --recover\`)`;
}

/** Installs the SIGINT and SIGTERM handlers described above until `remove` is called. */
export function finishStepOnInterrupt(err: Writable): Interrupt {
  let first: InterruptSignal | undefined;
  // The terminal or pipe may be gone (a closed SSH session, a reader that quit): failing to say so
  // must not end the process between a fence and its commit. The stream's own error handlers
  // (bin/shardctl.ts exits on EPIPE) are set aside until the step is over, not merely joined.
  const errorHandlers = err.listeners("error") as ((e: unknown) => void)[];
  const remove = () => {
    for (const sig of INTERRUPT_SIGNALS) process.off(sig, onSignal);
    err.off("error", ignoreWriteError);
    for (const h of errorHandlers) if (!err.listeners("error").includes(h)) err.on("error", h);
  };
  function onSignal(sig: InterruptSignal) {
    if (first !== undefined) {
      remove();
      err.write(
        `\n${sig} again: exiting now; the migration in flight is left as it is: run \`shardctl migrations --recover\`\n`,
      );
      // ended by the signal, as a process without a handler would be
      process.kill(process.pid, sig);
      return;
    }
    first = sig;
    err.write(`\n${sig}: ${interruptHint(sig)}\n`);
  }
  function ignoreWriteError() {}
  for (const sig of INTERRUPT_SIGNALS) process.on(sig, onSignal);
  for (const h of errorHandlers) err.off("error", h);
  err.on("error", ignoreWriteError);
  return {
    reason: () => (first ? `interrupted (${first})` : undefined),
    exitCode: () => (first ? INTERRUPT_EXIT_CODES[first] : undefined),
    remove,
  };
}
