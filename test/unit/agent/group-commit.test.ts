import { describe, expect, it } from "vitest";
import { GroupCommit } from "../../../src/agent/group-commit.js";

/** A flush whose completion the test controls. */
function controlled() {
  const calls: number[][] = [];
  const finish: ((err?: Error) => void)[] = [];
  const flush = (items: number[]) =>
    new Promise<void>((resolve, reject) => {
      calls.push(items);
      finish.push((err) => (err ? reject(err) : resolve()));
    });
  return { calls, finish, flush };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("GroupCommit", () => {
  it("batches everything submitted while a flush is in flight into the next flush", async () => {
    const c = controlled();
    const g = new GroupCommit<number>(c.flush);
    const acked: number[] = [];
    const p1 = g.submit(1).then(() => acked.push(1));
    await tick();
    expect(c.calls).toEqual([[1]]);
    const rest = [2, 3, 4].map((n) => g.submit(n).then(() => acked.push(n)));
    await tick();
    expect(c.calls).toHaveLength(1); // nothing else starts while the first fsync runs
    expect(acked).toEqual([]);
    c.finish[0]();
    await p1;
    await tick();
    expect(acked).toEqual([1]);
    expect(c.calls).toEqual([[1], [2, 3, 4]]);
    c.finish[1]();
    await Promise.all(rest);
    expect(acked).toEqual([1, 2, 3, 4]);
    expect(g.flushes).toBe(2);
    expect(g.items).toBe(4);
  });

  it("shares one flush among items submitted in the same tick", async () => {
    const c = controlled();
    const g = new GroupCommit<number>(c.flush);
    const ps = [1, 2, 3].map((n) => g.submit(n));
    await tick();
    expect(c.calls).toEqual([[1, 2, 3]]);
    c.finish[0]();
    await Promise.all(ps);
  });

  it("acknowledges nothing before its flush completes", async () => {
    const c = controlled();
    const g = new GroupCommit<number>(c.flush);
    let done = false;
    void g.submit(1).then(() => (done = true));
    for (let i = 0; i < 5; i++) await tick();
    expect(done).toBe(false);
    c.finish[0]();
    await tick();
    expect(done).toBe(true);
  });

  it("rejects a failed flush's items and refuses every later submit", async () => {
    const c = controlled();
    const g = new GroupCommit<number>(c.flush);
    const p1 = g.submit(1);
    await tick();
    const p2 = g.submit(2);
    c.finish[0](new Error("EIO"));
    await expect(p1).rejects.toThrow("EIO");
    await expect(p2).rejects.toThrow("EIO");
    await expect(g.submit(3)).rejects.toThrow("EIO");
    expect(c.calls).toEqual([[1]]);
  });

  it("idle() resolves once the queue is drained", async () => {
    const c = controlled();
    const g = new GroupCommit<number>(c.flush);
    void g.submit(1);
    let idle = false;
    const wait = g.idle().then(() => (idle = true));
    await tick();
    expect(idle).toBe(false);
    c.finish[0]();
    await wait;
    expect(idle).toBe(true);
    expect(g.pending).toBe(0);
  });
});
