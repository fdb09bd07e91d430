/**
 * Command-line parsing for `hub-session`: `@std/cli`'s `parseArgs` with
 * strict checks (unknown flags and missing values are usage errors), typed
 * readers, and where API keys come from without showing them in `ps`.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { readFile } from "node:fs/promises";

/** A wrong command line: exit code 2. */
export class UsageError extends Error {
  /** Creates an error; `message` says what is wrong and where help is. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** What a command reads from its surroundings and where it writes. */
export interface Io {
  /** Receives each line of standard output. */
  write: (line: string) => void;
  /** Receives each line of standard error. */
  writeError: (line: string) => void;
  /** Reads an environment variable. */
  env: (name: string) => string | undefined;
  /** Stops the command. */
  signal: AbortSignal | undefined;
}

/** Parsed flags: strings, booleans and repeated strings. */
export type Values = Record<string, string | boolean | string[] | undefined>;

/** The flags one command accepts. */
export interface FlagSpec {
  /** Flags that take a value. */
  string?: readonly string[] | undefined;
  /** Flags that take a value and may be repeated. */
  collect?: readonly string[] | undefined;
  /** One-letter aliases. */
  alias?: Readonly<Record<string, string>> | undefined;
}

/**
 * Parses a command's arguments; `-h`/`--help` is always accepted.
 *
 * @param command The command, for messages.
 * @param args The arguments after the command.
 * @param spec The flags it accepts.
 * @returns The flags and the positional arguments.
 * @throws {UsageError} On an unknown flag or a flag without its value.
 */
export function parse(
  command: string,
  args: string[],
  spec: FlagSpec,
): { values: Values; positionals: string[] } {
  const strings = [...(spec.string ?? []), ...(spec.collect ?? [])];
  const known = new Set([...strings, "help", "h"]);
  for (const [short, long] of Object.entries(spec.alias ?? {})) {
    known.add(short).add(long);
  }
  const parsed = parseArgs(args, {
    string: strings,
    collect: [...(spec.collect ?? [])],
    boolean: ["help"],
    alias: { h: "help", ...spec.alias },
    unknown: (arg, key) => {
      if (key === undefined) return true; // a positional argument
      if (!known.has(key)) {
        throw new UsageError(
          `Unknown option '${
            arg.split("=")[0]
          }' (see hub-session ${command} --help)`,
        );
      }
      return true;
    },
  });
  // `--hub` at the end (no value) parses as an empty string: refuse it.
  for (const name of strings) {
    const value = (parsed as Record<string, unknown>)[name];
    const list = Array.isArray(value) ? value : [value];
    const flagGiven = args.some((a) =>
      a === `--${name}` || a.startsWith(`--${name}=`)
    );
    if (flagGiven && list.some((v) => v === "" || v === undefined)) {
      throw new UsageError(
        `Option --${name} needs a value (see hub-session ${command} --help)`,
      );
    }
  }
  const values: Values = {};
  for (const [name, value] of Object.entries(parsed)) {
    if (name === "_") continue;
    values[name] = value as Values[string];
  }
  return { values, positionals: parsed._.map(String) };
}

/**
 * Reads a string flag.
 *
 * @param values Parsed flags.
 * @param name Flag name.
 * @returns Its value, or `undefined` when absent.
 */
export function text(values: Values, name: string): string | undefined {
  const value = values[name];
  return typeof value === "string" ? value : undefined;
}

/**
 * Reads an integer flag within bounds.
 *
 * @param values Parsed flags.
 * @param name Flag name.
 * @param min Smallest allowed value.
 * @param max Largest allowed value.
 * @returns The value, or `undefined` when absent.
 * @throws {UsageError} When it is not an integer in range.
 */
export function integer(
  values: Values,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const raw = text(values, name);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max) {
    throw new UsageError(
      `--${name} must be an integer from ${min} to ${max}, got "${raw}"`,
    );
  }
  return value;
}

/**
 * Checks the number of positional arguments.
 *
 * @param command The command, for messages.
 * @param given The positional arguments.
 * @param names Their expected names.
 * @returns The arguments.
 * @throws {UsageError} When there are too many or too few.
 */
export function positionals(
  command: string,
  given: string[],
  names: string[],
): string[] {
  if (given.length !== names.length) {
    throw new UsageError(
      `hub-session ${command} takes ${names.join(" ") || "no argument"}, got ${
        given.length === 0 ? "nothing" : `${given.length} argument(s)`
      } (see hub-session ${command} --help)`,
    );
  }
  return given;
}

/** The warning printed when a key is passed on the command line. */
export const KEY_ARGUMENT_WARNING =
  "an API key passed as a command-line argument is visible to every local user (ps, /proc/PID/cmdline) and `deno task` prints it: put it in the HUB_API_KEY environment variable or in a file read with --api-key-file instead";

/**
 * The API keys a command uses, by precedence: the command-line flag (with a
 * warning saying why not to), `--api-key-file` (one key per line), else the
 * `HUB_API_KEY` environment variable.
 *
 * @param values Parsed flags.
 * @param flag The flag that carries a key (`key` or `api-key`).
 * @param io Environment and output for the warning.
 * @returns The keys found (possibly none).
 * @throws {UsageError} On an empty key.
 * @throws {Error} When the key file cannot be read.
 */
export async function readKeys(
  values: Values,
  flag: string,
  io: Io,
): Promise<string[]> {
  const given = values[flag];
  const fromArgs = (Array.isArray(given) ? given : [given]).filter(
    (v): v is string => typeof v === "string",
  );
  if (fromArgs.length > 0) {
    if (fromArgs.some((key) => key.trim() === "")) {
      throw new UsageError(
        `--${flag} must not be empty: set HUB_API_KEY or use --api-key-file instead`,
      );
    }
    io.writeError(`HUB: WARNING ${KEY_ARGUMENT_WARNING}`);
    return fromArgs.map((key) => key.trim());
  }
  const file = text(values, "api-key-file");
  if (file !== undefined) {
    let content: string;
    try {
      content = await readFile(file, "utf8");
    } catch (error) {
      throw new Error(
        `Cannot read the API key file ${file} (${
          (error as { code?: string }).code ?? (error as Error).message
        }): check the path and its permissions`,
      );
    }
    const keys = content.split(/\r?\n/).map((line) => line.trim()).filter(
      (line) => line !== "" && !line.startsWith("#"),
    );
    if (keys.length === 0) {
      throw new UsageError(
        `The API key file ${file} holds no key: write one key per line`,
      );
    }
    return keys;
  }
  const env = io.env("HUB_API_KEY")?.trim();
  return env === undefined || env === "" ? [] : [env];
}
