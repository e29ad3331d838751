import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EmbeddedStore } from "../../src/store/embedded.js";
import { locationStoreContract } from "./location-store.contract.js";

locationStoreContract("embedded", async () => {
  const dir = mkdtempSync(join(tmpdir(), "shardctl-contract-"));
  return {
    store: new EmbeddedStore(dir),
    second: () => new EmbeddedStore(dir),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
});
