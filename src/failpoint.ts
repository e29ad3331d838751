/**
 * Failpoints for fault-injection tests, in the manner of etcd's gofail or
 * TiKV's fail-rs. With `SHARDCTL_FAILPOINT=<name>` in its environment, a
 * process that reaches the named point says so on stderr and stops itself
 * (SIGSTOP), so that a test can kill, pause or resume it exactly there.
 * Without the variable, a failpoint is one string comparison.
 *
 * Points (see docs/MIGRATION.md): migrate.journaled, migrate.copying,
 * migrate.fenced, migrate.prepared, migrate.committed, migrate.activated;
 * deploy.locked (deploy, deploy --rollback, undeploy and node start|stop|restart
 * hold the deploy lock and have touched no node yet; docs/DEPLOY.md).
 */
export function failpoint(name: string): void {
  if (process.env.SHARDCTL_FAILPOINT !== name) return;
  // stderr is synchronous on a pipe or a file on Linux: the line is out before the stop
  process.stderr.write(`failpoint ${name}: stopping (pid ${process.pid})\n`);
  process.kill(process.pid, "SIGSTOP");
}
