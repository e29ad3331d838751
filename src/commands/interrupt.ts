/**
 * Ctrl-C during `migrate --apply` and `reshard --apply`. The first SIGINT
 * does not end the process: the coordinator stops at its next safe point
 * (before the commit it rolls back — the source unfenced, the target's copy
 * dropped, the journal record ended as aborted; after the commit it finishes
 * the activation and ends the record as done), starts nothing more, and the
 * command exits 130. A second SIGINT ends the process at once, by the signal,
 * leaving the record open for `shardctl migrations --recover`.
 */
import type { Writable } from "node:stream";

export interface Interrupt {
  /** Why the command was interrupted ("interrupted (SIGINT)"), or undefined while it was not. */
  readonly reason: () => string | undefined;
  /** Removes the handler (the default disposition is back: a SIGINT ends the process). */
  readonly remove: () => void;
}

export const INTERRUPT_HINT =
  "finishing the step in flight; press Ctrl-C again to exit now (then run `shardctl migrations --recover`)";

/** Installs the SIGINT handler described above until `remove` is called. */
export function finishStepOnInterrupt(err: Writable): Interrupt {
  let reason: string | undefined;
  const onSignal = () => {
    if (reason !== undefined) {
      process.off("SIGINT", onSignal);
      err.write(
        "\nSIGINT again: exiting now; the migration in flight is left as it is: run `shardctl migrations --recover`\n",
      );
      // ended by the signal, as a process without a handler would be
      process.kill(process.pid, "SIGINT");
      return;
    }
    reason = "interrupted (SIGINT)";
    err.write(`\nSIGINT: ${INTERRUPT_HINT}\n`);
  };
  process.on("SIGINT", onSignal);
  return { reason: () => reason, remove: () => process.off("SIGINT", onSignal) };
}
