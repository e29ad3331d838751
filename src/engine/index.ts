export * from "./hash.js";
export * from "./segmenter.js";
export * from "./access-windows.js";
export * from "./location-map.js";
export * from "./assigner.js";
export * from "./ports.js";
export * from "./lsmm.js";
export * from "./migration.js";
