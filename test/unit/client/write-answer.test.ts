/**
 * writeAnswer: what the routing client makes of a 200 answer to a put or delete. A real agent
 * always answers a write with `{lsn, epoch}` / `{lsn, existed, epoch}` (src/agent/server.ts builds
 * it by hand), so a body that is not that cannot be produced by the integration tests' real
 * agents: something else answering at the address (a proxy, a different service, an agent of
 * another version) is what sends it. This is the parsing alone, without I/O.
 */
import { describe, expect, it } from "vitest";
import { writeAnswer } from "../../../src/client/shard-client.js";
import { ExitCode, UserError } from "../../../src/errors.js";

const site = { key: "user:42", address: "10.0.0.7:7401", shardId: "shard-3" };

function answer(body: string, headers: Record<string, string> = {}) {
  return { status: 200, headers, body: Buffer.from(body) };
}

function refusal(method: "PUT" | "DELETE", body: string): UserError {
  try {
    writeAnswer(method as "PUT", site, answer(body));
  } catch (err) {
    return err as UserError;
  }
  throw new Error(`expected ${JSON.stringify(body)} to be refused`);
}

describe("writeAnswer", () => {
  it("reads an agent's answers, and says when the write was already applied", () => {
    expect(writeAnswer("PUT", site, answer('{"lsn":7,"epoch":2}'))).toEqual({ lsn: 7 });
    expect(writeAnswer("DELETE", site, answer('{"lsn":8,"existed":false,"epoch":2}'))).toEqual({
      lsn: 8,
      existed: false,
    });
    const dup = answer('{"lsn":7,"existed":true,"epoch":2}', { "x-write-duplicate": "true" });
    expect(writeAnswer("DELETE", site, dup)).toEqual({ lsn: 7, existed: true, duplicate: true });
  });

  it("refuses a body that is not what an agent sends, naming the agent and calling the write possibly applied", () => {
    const bodies: [string, RegExp][] = [
      ["", /empty/],
      ["<html>502 Bad Gateway</html>", /not JSON: "<html>502 Bad Gateway<\/html>"/],
      ['{"lsn":7', /not JSON/],
      ["null", /not a JSON object/],
      ["[1,2]", /not a JSON object/],
      ['{"epoch":2}', /no lsn/],
      ['{"lsn":"7"}', /lsn "7" is not a non-negative integer/],
      ['{"lsn":-1}', /lsn -1 is not a non-negative integer/],
      ['{"lsn":1.5}', /not a non-negative integer/],
      ['{"lsn":1e300}', /not a non-negative integer/],
      ["\u0000\u00ff\u0007", /not JSON/],
    ];
    for (const [body, why] of bodies) {
      const err = refusal("PUT", body);
      expect(err, body).toBeInstanceOf(UserError);
      expect(err.exitCode).toBe(ExitCode.Failed);
      expect(err.message, body).toContain(
        "the agent at 10.0.0.7:7401 answered 200 to PUT of user:42 (shard shard-3)",
      );
      expect(err.message, body).toMatch(why);
      expect(err.message, body).toMatch(/the write may have been applied/);
      expect(err.hint, body).toMatch(/read the key.*or retry it with the same write id/);
    }
    // a delete also needs `existed`
    expect(refusal("DELETE", '{"lsn":3}').message).toMatch(/existed is not true or false/);
    expect(refusal("DELETE", '{"lsn":3,"existed":"yes"}').message).toMatch(/existed is not true or false/);
  });

  it("quotes at most 200 characters of a long body, escaped", () => {
    const err = refusal("PUT", "x".repeat(100_000) + "\r\nX-Evil: 1");
    expect(err).toBeInstanceOf(UserError);
    expect(err.message.length).toBeLessThan(600);
    expect(err.message).not.toContain("\r\n");
  });
});
