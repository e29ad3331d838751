/**
 * Failpoints for fault-injection tests, in the manner of etcd's gofail or
 * TiKV's fail-rs. With `SHARDCTL_FAILPOINT=<name>` in its environment, a
 * process that reaches the named point says so on stderr and stops itself
 * (SIGSTOP), so that a test can kill, pause or resume it exactly there.
 * Without the variable, a failpoint is one string comparison.
 *
 * Once continued, it lets its event loop run for a moment before it goes on,
 * so that a signal sent while it was stopped (a test's SIGINT or SIGTERM) is
 * handled first, as it would be by a process that was merely slow there. The
 * kernel may hand such a signal to any of Node's threads, not only the one
 * running JavaScript; the handler's message then reaches the event loop a
 * little later, and on a loaded machine that was once after the step had
 * finished.
 *
 * Points (see docs/MIGRATION.md): migrate.journaled, migrate.copying,
 * migrate.fenced, migrate.prepared, migrate.commit-read (the commit point has read the map it
 * builds the next one from, before it writes), migrate.committed, migrate.activated (a move's or a
 * split's/merge's roll-forward is done on the agents, its record not yet);
 * deploy.locked (deploy, deploy --rollback, undeploy and node start|stop|restart
 * hold the deploy lock and have touched no node yet; docs/DEPLOY.md);
 * undeploy.connected.
 */
import { setTimeout as sleep } from "node:timers/promises";

/** How long a continued process lets its event loop run before it goes on. */
const SETTLE_MS = 250;

export async function failpoint(name: string): Promise<void> {
  if (process.env.SHARDCTL_FAILPOINT !== name) return;
  // stderr is synchronous on a pipe or a file on Linux: the line is out before the stop
  process.stderr.write(`failpoint ${name}: stopping (pid ${process.pid})\n`);
  process.kill(process.pid, "SIGSTOP");
  await sleep(SETTLE_MS);
}
