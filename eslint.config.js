// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "coverage/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-constant-condition": ["error", { checkLoops: false }],
    },
  },
  {
    // The engine and the forecaster are pure: no I/O, no Consul, no HTTP, no Ink.
    files: ["src/engine/**/*.ts", "src/forecast/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["node:*", "fs", "http", "net", "child_process", "os", "path"],
              message: "the engine is pure: pass data in through a port",
            },
            {
              group: ["consul", "ssh2", "ink", "react", "prom-client"],
              message: "the engine is pure: no Consul, SSH, HTTP or Ink",
            },
            {
              group: [
                "**/consul/**",
                "**/cluster/**",
                "**/agent/**",
                "**/tui/**",
                "**/client/**",
                "**/commands/**",
              ],
              message: "the engine never imports the edges",
            },
          ],
        },
      ],
    },
  },
);
