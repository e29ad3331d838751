import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli } from "../helpers/cli.js";
import { ConsulHttp } from "../../src/consul/http.js";
import { consulKeys } from "../../src/consul/keys.js";
import { ConsulStore } from "../../src/consul/store.js";
import { JOURNAL_HISTORY, type MigrationRecord } from "../../src/engine/migration.js";
import {
  rawDeleteTree,
  rawKeys,
  rawPut,
  startConsulDev,
  uniquePrefix,
  type DevConsul,
} from "../helpers/consul.js";
import { journalRecord, locationStoreContract, smallMap } from "./location-store.contract.js";

let consul: DevConsul;
beforeAll(async () => {
  consul = await startConsulDev();
});
afterAll(async () => {
  await consul?.stop();
});

locationStoreContract("consul", async () => {
  const prefix = uniquePrefix("contract");
  const open = () =>
    new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix }), prefix, watchWaitS: 5 });
  const store = open();
  return {
    store,
    second: open,
    cleanup: async () => {
      await store.close();
      await rawDeleteTree(consul.addr, prefix);
    },
  };
});

describe("the Consul journal's history", () => {
  it("trims ended records but never one it cannot read", async () => {
    const prefix = uniquePrefix("trim");
    const store = new ConsulStore({ http: new ConsulHttp({ addr: consul.addr, prefix }), prefix });
    try {
      await store.compareAndSet(0, smallMap());
      await rawPut(consul.addr, `${consulKeys(prefix).migrationsDir}junk`, "{not json");
      for (let i = 0; i < JOURNAL_HISTORY + 5; i++) {
        const at = 1000 + i;
        const r = await store.putMigration({
          record: endedRecord(`e-${String(i).padStart(4, "0")}`, at),
          expectRev: 0,
        });
        expect(r.ok).toBe(true);
      }
      const list = await store.listMigrations();
      expect(list.records.length).toBe(JOURNAL_HISTORY);
      expect(list.records[0].record.id).toBe("e-0005");
      expect(list.unreadable).toEqual(["junk"]);
      expect(await rawKeys(consul.addr, `${consulKeys(prefix).migrationsDir}junk`)).toEqual([
        `${consulKeys(prefix).migrationsDir}junk`,
      ]);
      // `shardctl migrations` skips it, saying where it is and what to do
      const home = mkdtempSync(join(tmpdir(), "shardctl-journal-"));
      try {
        const r = await cli(["migrations"], {
          HOME: home,
          SHARDCTL_DATA_DIR: join(home, "data"),
          SHARDCTL_STORE: "consul",
          CONSUL_HTTP_ADDR: consul.addr,
          SHARDCTL_CONSUL_PREFIX: prefix,
        });
        expect(r.code, r.err).toBe(0);
        expect(r.err).toContain(
          `warning: journal record junk is not readable; skipped (inspect it with \`consul kv get ${prefix}migrations/junk\` and delete it if it is not a migration)`,
        );
      } finally {
        rmSync(home, { recursive: true, force: true });
      }
    } finally {
      await store.close();
      await rawDeleteTree(consul.addr, prefix);
    }
  }, 60_000);
});

function endedRecord(id: string, startedAt: number): MigrationRecord {
  const at = { done: startedAt + 1 };
  const r = journalRecord(id, startedAt);
  return { ...r, phase: "done", phaseAt: { ...r.phaseAt, ...at }, endedAt: at.done };
}
