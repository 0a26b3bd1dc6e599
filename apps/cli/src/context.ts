import { isCodedError, RemoteError } from '@handoff/service';
import * as grpc from '@grpc/grpc-js';
import { Clients, DEFAULT_ENDPOINTS, type Endpoints } from './api/clients.js';
import { operatorTls } from './api/credentials.js';
import { CliError, EXIT } from './errors.js';
import type { Io, OutputFormat } from './output/render.js';
import { toJson } from './output/render.js';

/** Global options every command accepts. */
export interface GlobalOptions {
  output: OutputFormat;
  memstore: string;
  migrator: string;
  timeout: string;
  /** Plaintext, for a cluster started with `--insecure` (also `HANDOFF_INSECURE=1`). */
  insecure?: boolean;
}

/** Resolves global options from flags, then HANDOFF_* variables, then local defaults. */
export function globalDefaults(
  env: NodeJS.ProcessEnv,
): Omit<GlobalOptions, 'output'> & { output: string } {
  return {
    output: env.HANDOFF_OUTPUT ?? 'table',
    memstore: env.HANDOFF_MEMSTORE_ADDR ?? DEFAULT_ENDPOINTS.memstore,
    migrator: env.HANDOFF_MIGRATOR_ADDR ?? DEFAULT_ENDPOINTS.migrator,
    timeout: env.HANDOFF_TIMEOUT_MS ?? String(DEFAULT_ENDPOINTS.timeoutMs),
  };
}

function endpointsOf(g: GlobalOptions, env: NodeJS.ProcessEnv): Endpoints {
  const timeoutMs = Number(g.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
    throw new CliError(
      'CLI_USAGE',
      `--timeout ${g.timeout} is not a positive number of milliseconds`,
    );
  }
  return {
    memstore: g.memstore,
    migrator: g.migrator,
    timeoutMs,
    tls: operatorTls(env, { insecure: g.insecure === true }),
  };
}

/** What a command body gets. */
export interface CommandContext {
  clients: Clients;
  output: OutputFormat;
  io: Io;
  /** Prints one JSON document (json output) or the table text. */
  print(json: unknown, table: () => string): void;
}

/**
 * Runs a command body with clients and output, closes the clients, and turns
 * any failure into a message on stderr and an exit code. Returns the code.
 */
export async function runCommand(
  io: Io,
  g: GlobalOptions,
  body: (ctx: CommandContext) => Promise<number | void>,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let clients: Clients | undefined;
  try {
    if (g.output !== 'table' && g.output !== 'json') {
      throw new CliError(
        'CLI_USAGE',
        `--output ${String(g.output)} is not a format; use table or json`,
      );
    }
    clients = new Clients(endpointsOf(g, env));
    const ctx: CommandContext = {
      clients,
      output: g.output,
      io,
      print: (json, table) => io.out(g.output === 'json' ? toJson(json) : table()),
    };
    return (await body(ctx)) ?? EXIT.ok;
  } catch (err) {
    return reportFailure(io, g.output, err);
  } finally {
    clients?.close();
  }
}

function reportFailure(io: Io, output: string, err: unknown): number {
  let code = 'CLI_FAILED';
  let message = err instanceof Error ? err.message : String(err);
  let exitCode: number = EXIT.failed;
  if (err instanceof CliError) {
    code = err.code;
    exitCode = err.exitCode;
  } else if (err instanceof RemoteError) {
    code = err.code;
    if (err.status === grpc.status.UNAVAILABLE || err.status === grpc.status.DEADLINE_EXCEEDED) {
      message +=
        ' — is the cluster running? Start it with `npm start`, or point vmctl at it with --memstore/--migrator or HANDOFF_MEMSTORE_ADDR/HANDOFF_MIGRATOR_ADDR' +
        ' (and use --insecure only for a cluster started with --insecure)';
    }
  } else if (isCodedError(err)) {
    code = err.code;
  }
  if (output === 'json') io.out(toJson({ error: { code, message } }));
  io.err(`vmctl: ${message}\n`);
  return exitCode;
}
