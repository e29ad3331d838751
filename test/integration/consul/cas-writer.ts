/**
 * A separate writer process for the CAS race test: increments the map's
 * nextShardSeq N times, each time from a fresh consistent read, retrying lost
 * races. Prints one JSON line: {wins, lost}.
 */
import { ConsulHttp } from "../../../src/consul/http.js";
import { ConsulStore } from "../../../src/consul/store.js";

const [addr, prefix, countArg, startAt] = process.argv.slice(2);
// Both writers start at the same instant, so that they really race.
await new Promise((r) => setTimeout(r, Math.max(0, Number(startAt) - Date.now())));
const store = new ConsulStore({ http: new ConsulHttp({ addr, prefix }), prefix });
let wins = 0;
let lost = 0;
while (wins < Number(countArg)) {
  const vm = await store.load({ consistent: true });
  if (!vm) throw new Error("no map");
  const next = { ...vm.map, nextShardSeq: vm.map.nextShardSeq + 1 };
  const r = await store.compareAndSet(vm.version, next);
  if (r.ok) wins++;
  else lost++;
}
await store.close();
process.stdout.write(JSON.stringify({ wins, lost }) + "\n");
