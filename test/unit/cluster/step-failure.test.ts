import { describe, expect, it } from "vitest";
import { StepError, stepFailure } from "../../../src/cluster/migrate.js";
import { UserError } from "../../../src/errors.js";

const nodes = [
  { id: "node-1", address: "127.0.0.1:7401" },
  { id: "node-3", address: "127.0.0.1:7403" },
];

function netError(code: string, address?: string, port?: number): Error {
  const e = new Error(`connect ${code} ${address}:${port}`) as NodeJS.ErrnoException & {
    address?: string;
    port?: number;
  };
  e.code = code;
  if (address !== undefined) e.address = address;
  if (port !== undefined) e.port = port;
  return e;
}

describe("stepFailure: why a migration step failed, in words", () => {
  it("names the node that cannot be reached, by its address", () => {
    expect(stepFailure(netError("ECONNREFUSED", "127.0.0.1", 7403), nodes)).toBe(
      "cannot reach node-3 at 127.0.0.1:7403 (connection refused)",
    );
    expect(stepFailure(netError("ECONNRESET"), nodes)).toBe("cannot reach an agent (connection reset)");
  });

  it("an address no node has is given as it is", () => {
    expect(stepFailure(netError("ETIMEDOUT", "10.0.0.9", 1), nodes)).toBe(
      "cannot reach 10.0.0.9:1 (timed out)",
    );
  });

  it("a described error keeps its words; anything else is unexpected", () => {
    expect(
      stepFailure(new UserError("cannot reach Consul at 127.0.0.1:8500 (connection refused)"), nodes),
    ).toBe("cannot reach Consul at 127.0.0.1:8500 (connection refused)");
    expect(stepFailure(new StepError("target node-3 (prepare): 500"), nodes)).toBe(
      "target node-3 (prepare): 500",
    );
    expect(stepFailure(new TypeError("x is undefined"), nodes)).toBe("unexpected: x is undefined");
    expect(stepFailure("a string", nodes)).toBe("unexpected: a string");
    const odd = netError("EWHATEVER", "127.0.0.1", 7401);
    expect(stepFailure(odd, nodes)).toBe(`unexpected: ${odd.message}`);
  });
});
