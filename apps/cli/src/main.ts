import { Command, CommanderError, Option } from 'commander';
import { HANDOFF_VERSION } from '@handoff/service';
import { registerJobs } from './commands/jobs.js';
import { registerLiveUpdate } from './commands/live-update.js';
import { registerMigrate } from './commands/migrate.js';
import { registerRegion } from './commands/region.js';
import { registerSave } from './commands/save.js';
import { registerSnapshot } from './commands/snapshot.js';
import { registerStatus } from './commands/status.js';
import { registerClone, registerTemplate } from './commands/template.js';
import { registerVm } from './commands/vm.js';
import type { CommandRunner } from './commands/runner.js';
import { globalDefaults, runCommand, type GlobalOptions } from './context.js';
import { EXIT } from './errors.js';
import { processIo, type Io } from './output/render.js';

/** Builds the vmctl program; `exitCode.value` holds the last command's status. */
export function buildProgram(io: Io, env: NodeJS.ProcessEnv, exitCode: { value: number }): Command {
  const d = globalDefaults(env);
  const program = new Command('vmctl')
    .description(
      'Control a Handoff cluster: memory regions, VMs, migration, live update, snapshots ' +
        '(save, restore, export, import), templates and clones, and jobs. Service addresses come ' +
        'from flags, HANDOFF_* variables, or the local defaults of `npm start`.',
    )
    .version(HANDOFF_VERSION, '-V, --version', 'print the vmctl version')
    .addOption(
      new Option('-o, --output <format>', 'table or json (one JSON document per command)')
        .default(d.output)
        .env('HANDOFF_OUTPUT'),
    )
    .addOption(
      new Option('--memstore <addr>', 'memstore address host:port')
        .default(d.memstore)
        .env('HANDOFF_MEMSTORE_ADDR'),
    )
    .addOption(
      new Option('--migrator <addr>', 'migrator address host:port')
        .default(d.migrator)
        .env('HANDOFF_MIGRATOR_ADDR'),
    )
    .addOption(
      new Option('--timeout <ms>', 'deadline of each call in milliseconds')
        .default(d.timeout)
        .env('HANDOFF_TIMEOUT_MS'),
    )
    .addOption(
      new Option(
        '--insecure',
        'talk plaintext, to a cluster started with --insecure (default: mutual TLS with the ' +
          'operator certificate from HANDOFF_TLS_DIR, HANDOFF_TLS_CERT/_KEY/_CA, or ' +
          './.handoff/tls)',
      ),
    )
    .showHelpAfterError('(run with --help for usage)')
    .enablePositionalOptions(false)
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride();

  const run: CommandRunner =
    (body) =>
    async (...args) => {
      const command = args[args.length - 1] as Command;
      const g = command.optsWithGlobals<GlobalOptions>();
      claimOwnTimeout(program, command, args[args.length - 2] as Record<string, unknown>, g, d);
      const rest = args.slice(0, -1) as Parameters<typeof body> extends [unknown, ...infer R]
        ? R
        : never;
      exitCode.value = await runCommand(
        io,
        g,
        (ctx) => (body as (c: typeof ctx, ...a: unknown[]) => Promise<number | void>)(ctx, ...rest),
        env,
      );
    };

  registerStatus(program, run);
  registerRegion(program, run);
  registerVm(program, run);
  registerMigrate(program, run);
  registerLiveUpdate(program, run);
  registerSave(program, run);
  registerSnapshot(program, run);
  registerTemplate(program, run);
  registerClone(program, run);
  registerJobs(program, run);
  program.commands.forEach(function inheritOutput(c: Command): void {
    c.configureOutput({ writeOut: io.out, writeErr: io.err })
      .exitOverride()
      .showHelpAfterError('(run with --help for usage)');
    c.commands.forEach(inheritOutput);
  });
  return program;
}

/**
 * `--timeout` is global (each call's deadline in ms) and also `vm run`'s own (how long the guest
 * may run). Commander hands a flag both know to the program, so for a command that declares its
 * own `--timeout`, one given on the command line is the command's (moved into its options), and
 * calls keep HANDOFF_TIMEOUT_MS or the default deadline.
 */
function claimOwnTimeout(
  program: Command,
  command: Command,
  opts: Record<string, unknown>,
  g: GlobalOptions,
  defaults: { timeout: string },
): void {
  if (!command.options.some((o) => o.long === '--timeout')) return;
  if (program.getOptionValueSource('timeout') === 'cli') {
    opts.timeout = program.getOptionValue('timeout') as string;
  }
  g.timeout = defaults.timeout;
}

/** Runs vmctl with argv (without node and script); resolves to the exit code. */
export async function main(
  argv: string[],
  io: Io = processIo,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const exitCode = { value: EXIT.ok as number };
  const program = buildProgram(io, env, exitCode);
  if (argv.length === 0) {
    program.outputHelp();
    return EXIT.usage;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      const ok = ['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(
        err.code,
      );
      return ok ? EXIT.ok : EXIT.usage;
    }
    throw err;
  }
  return exitCode.value;
}
