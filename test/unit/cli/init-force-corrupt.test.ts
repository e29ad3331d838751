/**
 * `init --force` over a damaged location map file: every corrupt-map error's hint says to run it,
 * so it must repair. The damaged file is kept beside the new one; without --force init still
 * refuses and changes nothing; a directory in the file's place is refused either way.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { advance, newJournal } from "../../../src/engine/migration.js";
import { EmbeddedStore } from "../../../src/store/embedded.js";
import { cli } from "../../helpers/cli.js";
import { tempDirs } from "../../helpers/temp-dirs.js";

const newDir = tempDirs("shardctl-init-corrupt-");
const env = { SHARDCTL_SEGMENTS: "64" };

/** A data directory with a good map (version 2), then damaged by `damage`. */
async function damaged(damage: (file: string, text: string) => void): Promise<string> {
  const d = join(newDir(), "data");
  expect((await cli(["-d", d, "init"], env)).code).toBe(0);
  expect((await cli(["-d", d, "init", "--force"], env)).code).toBe(0);
  const file = join(d, "location-map.json");
  damage(file, readFileSync(file, "utf8"));
  return d;
}

const damages: [string, (file: string, text: string) => void, RegExp][] = [
  ["truncated", (f, t) => writeFileSync(f, t.slice(0, 100)), /not JSON/],
  ["empty", (f) => writeFileSync(f, ""), /not JSON/],
  [
    "a flipped byte (checksum mismatch)",
    (f, t) => writeFileSync(f, t.replace('"segmentCount":64', '"segmentCount":65')),
    /checksum mismatch/,
  ],
  ["the wrong JSON shape", (f) => writeFileSync(f, '{"hello":"world"}'), /not a shardctl location map file/],
  ["JSON null", (f) => writeFileSync(f, "null"), /not a shardctl location map file/],
  [
    "a journal that is not a list",
    (f, t) => writeFileSync(f, JSON.stringify({ ...JSON.parse(t), journal: { records: 7 } })),
    /the migration journal is not a list/,
  ],
];

describe("init on a corrupt embedded map", () => {
  for (const [what, damage, why] of damages) {
    it(`${what}: refused without --force (nothing written), replaced with --force (a copy kept)`, async () => {
      const d = await damaged(damage);
      const file = join(d, "location-map.json");
      const bad = readFileSync(file);
      const before = readdirSync(d).sort();

      const refused = await cli(["-d", d, "init"], env);
      expect(refused.code).toBe(1);
      expect(refused.err).toMatch(why);
      expect(refused.err).toMatch(/shardctl init --force/);
      expect(readFileSync(file)).toEqual(bad);
      expect(readdirSync(d).sort()).toEqual(before);

      const forced = await cli(["-d", d, "init", "--force", "--json"], env);
      expect(forced.err).not.toMatch(/internal error/);
      expect(forced.code, forced.err).toBe(0);
      const summary = JSON.parse(forced.out);
      expect(summary).toMatchObject({ store: "embedded", segments: 64 });
      expect(summary.corruptKeptAs).toMatch(/location-map\.json\.corrupt-\d{4}-\d\d-\d\dT[\d-]+Z$/);
      expect(forced.err).toContain(`was corrupt`);
      expect(forced.err).toContain(`the damaged file is kept as ${summary.corruptKeptAs}`);
      // the copy is the damaged file byte for byte; no temporary or lock file is left
      expect(readFileSync(summary.corruptKeptAs)).toEqual(bad);
      expect(readdirSync(d).sort()).toEqual([...before, summary.corruptKeptAs.slice(d.length + 1)].sort());
      // the new map reads, and its version is above the damaged file's when that still said one
      const loaded = await new EmbeddedStore(d).load();
      expect(loaded!.map.segmentCount).toBe(64);
      expect(loaded!.version).toBe(summary.version);
      expect((await cli(["-d", d, "shards", "--json"], env)).code).toBe(0);
    });
  }

  it("a flipped byte keeps the version rising from the damaged file's", async () => {
    const d = await damaged((f, t) => writeFileSync(f, t.replace('"segmentCount":64', '"segmentCount":65')));
    const forced = await cli(["-d", d, "init", "--force", "--json"], env);
    expect(JSON.parse(forced.out).version).toBe(3);
  });

  it("a directory in place of the file is still refused, with --force too", async () => {
    const d = join(newDir(), "data");
    mkdirSync(join(d, "location-map.json"), { recursive: true });
    const r = await cli(["-d", d, "init", "--force"], env);
    expect(r.err).not.toMatch(/internal error/);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/cannot read the location map .*location-map\.json: EISDIR/);
    expect(readdirSync(d)).toEqual(["location-map.json"]);
  });
});

describe("init --force and an open migration", () => {
  it("is refused (exit 3, nothing changed) while the journal holds an open migration; taken once it ended", async () => {
    const d = join(newDir(), "data");
    expect((await cli(["-d", d, "init", "--nodes", "n1@a,n2@b"], env)).code).toBe(0);
    const store = new EmbeddedStore(d);
    const vm = (await store.load())!;
    const shard = vm.map.shards.find((s) => s.node === "n1")!;
    const record = {
      ...newJournal({ id: "m-open", shard, target: "n2", planVersion: vm.version, term: 0, now: Date.now() }),
      bytesCopied: 0,
      entriesCopied: 0,
      rounds: 0,
    };
    expect(
      (await store.putMigration({ record: advance(record, "copying", Date.now()), expectRev: 0 })).ok,
    ).toBe(true);
    const before = readFileSync(join(d, "location-map.json"), "utf8");
    // before: init replaced the layout, and the migration then committed its copy onto a shard of
    // the new layout (init restarts epochs at 1: its node and epoch matched again)
    const r = await cli(["-d", d, "init", "--force", "--nodes", "n1@a,n2@b"], env);
    expect(r.code, r.err).toBe(3);
    expect(r.err).toMatch(
      /migration m-open of shard-\d+ is open \(copying\): replacing the layout under it .*nothing was changed/,
    );
    expect(readFileSync(join(d, "location-map.json"), "utf8")).toBe(before);
    const stored = (await store.getMigration("m-open"))!;
    const ended = { ...advance(stored.record, "aborted", Date.now()), endedAt: Date.now() };
    expect((await store.putMigration({ record: ended, expectRev: stored.rev })).ok).toBe(true);
    expect((await cli(["-d", d, "init", "--force", "--nodes", "n1@a,n2@b"], env)).code).toBe(0);
  });
});
