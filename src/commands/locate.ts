/** `shardctl locate <key>`: the spec's get_shard_location(data_key). */
import type { Command } from "commander";
import { AccessWindows } from "../engine/access-windows.js";
import { printable, printJson, printTable } from "../output.js";
import { openStore } from "../store/index.js";
import { lsmmFor, withStore } from "./common.js";
import type { CommandContext } from "./context.js";

export function registerLocate(program: Command, ctx: CommandContext): void {
  program
    .command("locate")
    .description("print the segment, log shard, epoch and node that hold a key (get_shard_location)")
    .argument("<key>", "the data key (UTF-8)")
    .option("--json", "print the location as JSON", false)
    .addHelpText(
      "after",
      `
Examples:
  $ shardctl locate user:42
  $ shardctl locate user:42 --json | jq -r .node`,
    )
    .action(async (key: string, o: { json: boolean }) => {
      const config = ctx.config();
      await withStore(
        () => openStore(config),
        async (store) => {
          const windows = new AccessWindows({
            segmentCount: config.segments,
            zones: config.zones,
            levels: config.windows.levels,
          });
          const lsmm = lsmmFor(config, store, windows);
          await lsmm.refresh();
          const loc = lsmm.locate(key);
          if (o.json) printJson(ctx.io, loc);
          else
            printTable(
              ctx.io,
              ["key", "segment", "shard", "epoch", "node", "zone", "address"],
              [
                [
                  printable(loc.key),
                  loc.segment,
                  loc.shard,
                  loc.epoch,
                  loc.node,
                  loc.zone ?? "",
                  loc.address ?? "",
                ],
              ],
            );
        },
      );
    });
}
