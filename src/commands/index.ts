/** Every command module, in the order `shardctl --help` lists them. */
import type { RegisterCommand } from "./context.js";
import { registerInit } from "./init.js";
import { registerLocate } from "./locate.js";
import { registerRecord } from "./record.js";
import { registerReshard } from "./reshard.js";
import { registerShards } from "./shards.js";
import { registerUp } from "./up.js";
import { registerKv } from "./kv.js";
import { registerAgent } from "./agent.js";
import { registerStatus } from "./status.js";
import { registerNodes } from "./nodes.js";
import { registerDeploy } from "./deploy.js";
import { registerNodeControl } from "./agent-remote.js";
import { registerAutopilot } from "./autopilot.js";
import { registerForecast } from "./forecast.js";
import { registerPredict } from "./predict.js";
import { registerPlan } from "./plan.js";
import { registerMigrate } from "./migrate.js";
import { registerSimulate } from "./simulate.js";
import { registerDashboard } from "./dashboard.js";
import { registerRtt } from "./rtt.js";

export const commands: RegisterCommand[] = [
  registerInit,
  registerLocate,
  registerRecord,
  registerReshard,
  registerShards,
  registerUp,
  registerKv,
  registerAgent,
  registerStatus,
  registerNodes,
  registerDeploy,
  registerNodeControl,
  registerAutopilot,
  registerForecast,
  registerPredict,
  registerPlan,
  registerMigrate,
  registerSimulate,
  registerDashboard,
  registerRtt,
];
