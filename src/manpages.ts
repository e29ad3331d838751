/** Man pages for every command, rendered from the commander program (see scripts/gen-man.ts). */
import type { Command } from "commander";
import { Writable } from "node:stream";
import { buildProgram, version } from "./cli.js";

const sink = new Writable({ write: (_c, _e, cb) => cb() });

function esc(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/-/g, "\\-").replace(/^\./gm, "\\&.").replace(/^'/gm, "\\&'");
}

/** The text commander prints after the options (examples), captured without printing. */
function helpAfter(cmd: Command): string {
  let text = "";
  cmd.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) });
  cmd.outputHelp();
  // outputHelp = helpInformation() + the texts added with addHelpText("after")
  const base = cmd.helpInformation();
  return text.startsWith(base) ? text.slice(base.length).trim() : "";
}

function page(cmd: Command, path: string[]): { file: string; text: string } {
  const name = ["shardctl", ...path].join("-");
  const usage = `shardctl ${path.join(" ")} ${cmd.usage()}`;
  const lines = [
    `.TH ${name.toUpperCase()} 1 "" "shardctl ${version()}" "User Commands"`,
    ".SH NAME",
    `${esc(name)} \\- ${esc(cmd.description())}`,
    ".SH SYNOPSIS",
    `.B ${esc(usage)}`,
    ".SH DESCRIPTION",
    esc(cmd.description()),
  ];
  const args = cmd.registeredArguments;
  if (args.length) {
    lines.push(".SH ARGUMENTS");
    for (const a of args) lines.push(".TP", `.B ${esc(a.name())}`, esc(a.description || ""));
  }
  if (cmd.options.length) {
    lines.push(".SH OPTIONS");
    for (const o of cmd.options) {
      const def =
        o.defaultValue !== undefined && o.defaultValue !== false
          ? ` (default: ${JSON.stringify(o.defaultValue)})`
          : "";
      lines.push(".TP", `.B ${esc(o.flags)}`, esc(o.description + def));
    }
  }
  const after = helpAfter(cmd);
  if (after) lines.push(".SH NOTES", ".nf", esc(after), ".fi");
  lines.push(".SH SEE ALSO", ".BR shardctl (1)");
  return { file: `${name}.1`, text: lines.join("\n") + "\n" };
}

export function manPages(): { file: string; text: string }[] {
  const program = buildProgram({ out: sink, err: sink }, {});
  const pages: { file: string; text: string }[] = [];
  const walk = (cmd: Command, path: string[]) => {
    for (const sub of cmd.commands) {
      const p = [...path, sub.name()];
      pages.push(page(sub, p));
      walk(sub, p);
    }
  };
  walk(program, []);
  return pages;
}
