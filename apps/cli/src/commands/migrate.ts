import type { Command } from 'commander';
import {
  QapiError,
  parseCapabilitySettings,
  parseParameterValue,
  resolveCapabilities,
  type MigrationCapabilityOverrides,
  type MigrationParameterOverrides,
} from '@handoff/qapi';
import { jobs } from '../api/jobs.js';
import { CliError, EXIT } from '../errors.js';
import { followJob, printJob } from './jobs.js';
import type { CommandRunner } from './runner.js';

/** Flags shared by migrate and live-update that set migration parameters. */
export interface ParameterFlags {
  downtimeLimit?: string;
  maxBandwidth?: string;
}

function usage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof QapiError) throw new CliError('CLI_USAGE', err.message);
    throw err;
  }
}

/** Migration parameters from --downtime-limit / --max-bandwidth (qapi parses units). */
export function parametersOf(flags: ParameterFlags): MigrationParameterOverrides {
  return usage(() => {
    const out: { -readonly [K in keyof MigrationParameterOverrides]: number } = {};
    if (flags.downtimeLimit !== undefined) {
      out['downtime-limit'] = parseParameterValue('downtime-limit', flags.downtimeLimit);
    }
    if (flags.maxBandwidth !== undefined) {
      out['max-bandwidth'] = parseParameterValue('max-bandwidth', flags.maxBandwidth);
    }
    return out;
  });
}

const collect = (v: string, prev: string[]) => [...prev, v];

/** `vmctl migrate NAME --to VMM ...`. */
export function registerMigrate(program: Command, run: CommandRunner): void {
  program
    .command('migrate')
    .argument('<name>', 'the VM to move')
    .requiredOption('--to <vmm>', 'the vmm instance to move it to')
    .option('--no-bypass', 'copy shared RAM too (turns bypass-shared-memory off)')
    .option('--downtime-limit <ms>', 'largest guest pause pre-copy aims for, in milliseconds')
    .option('--max-bandwidth <rate>', 'RAM bandwidth cap in bytes/s (e.g. 100M, 1G; 0 = unlimited)')
    .option(
      '--capability <name=on|off>',
      'set a migration capability, e.g. auto-converge=off (repeatable, or comma-separated); ' +
        'auto-converge is on by default (unlike QEMU): a guest that dirties its RAM faster ' +
        'than it copies is throttled until the copy converges; off, such a copy fails after ' +
        'max-iterations passes',
      collect,
      [] as string[],
    )
    .option('-d, --detach', 'print the job and return at once instead of following it')
    .description(
      'migrate a running VM to another vmm instance (with bypass-shared-memory, shared RAM stays ' +
        'in place and only device state and private RAM move); shows progress until it ends',
    )
    .action(
      run(
        async (
          ctx,
          name: string,
          opts: ParameterFlags & {
            to: string;
            bypass: boolean;
            capability: string[];
            detach?: boolean;
          },
        ) => {
          const overrides: MigrationCapabilityOverrides = usage(() => {
            let o: MigrationCapabilityOverrides = { 'bypass-shared-memory': opts.bypass };
            for (const c of opts.capability) o = { ...o, ...parseCapabilitySettings(c) };
            return o;
          });
          const job = await jobs(ctx.clients).migrate({
            vm: name,
            targetVmm: opts.to,
            capabilities: usage(() => resolveCapabilities(overrides)),
            parameters: parametersOf(opts),
          });
          if (opts.detach === true) {
            printJob(ctx, job, 'started');
            return EXIT.ok;
          }
          return followJob(ctx, job);
        },
      ),
    );
}
