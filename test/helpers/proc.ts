/** What the kernel says of a process (Linux /proc). */
import { readFileSync } from "node:fs";

/** The state letter from /proc/PID/stat (R, S, T once every thread has stopped, …); "" when it is gone. */
export function processState(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // pid (comm) STATE …: comm may hold spaces and parentheses, so read after the last ")"
    const at = stat.lastIndexOf(")") + 2;
    return stat.slice(at, at + 1);
  } catch {
    return "";
  }
}
