/** `shardctl shards`: the location map, one row per shard. */
import type { Command } from "commander";
import { segmentsOf } from "../engine/location-map.js";
import { PreconditionError } from "../errors.js";
import { printJson, printTable } from "../output.js";
import { openStore } from "../store/index.js";
import { withStore } from "./common.js";
import type { CommandContext } from "./context.js";
import { formatRanges } from "./reshard.js";

export function registerShards(program: Command, ctx: CommandContext): void {
  program
    .command("shards")
    .description("list the log shards of the location map: segments, node, epoch, last migration")
    .option("--json", "print the whole map as JSON", false)
    .addHelpText(
      "after",
      "\nExamples:\n  $ shardctl shards\n  $ shardctl shards --json | jq '.map.shards[0]'",
    )
    .action(async (o: { json: boolean }) => {
      const config = ctx.config();
      await withStore(
        () => openStore(config),
        async (store) => {
          const vm = await store.load();
          if (!vm)
            throw new PreconditionError("the location store holds no layout yet", {
              hint: "run `shardctl init`",
            });
          if (o.json) {
            printJson(ctx.io, vm);
            return;
          }
          printTable(
            ctx.io,
            ["shard", "segments", "count", "node", "epoch", "migrated"],
            vm.map.shards.map((s) => [
              s.id,
              formatRanges(s.ranges),
              segmentsOf(s),
              s.node,
              s.epoch,
              s.migrationTimestamp ? new Date(s.migrationTimestamp).toISOString() : "never",
            ]),
          );
          ctx.io.out.write(
            `version ${vm.version}, ${vm.map.shards.length} shards, ${vm.map.nodes.length} nodes\n`,
          );
        },
      );
    });
}
