import { afterAll, beforeAll } from "vitest";
import { ConsulHttp } from "../../src/consul/http.js";
import { ConsulStore } from "../../src/consul/store.js";
import { rawDeleteTree, startConsulDev, uniquePrefix, type DevConsul } from "../helpers/consul.js";
import { locationStoreContract } from "./location-store.contract.js";

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
