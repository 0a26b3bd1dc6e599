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
import type { CommandContext } from '../context.js';

/** Flags shared by migrate and live-update that set migration parameters. */
export interface ParameterFlags {
  downtimeLimit?: string;
  maxBandwidth?: string;
  maxPostcopyBandwidth?: string;
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
    if (flags.maxPostcopyBandwidth !== undefined) {
      out['max-postcopy-bandwidth'] = parseParameterValue(
        'max-postcopy-bandwidth',
        flags.maxPostcopyBandwidth,
      );
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
    .option('--to <vmm>', 'the vmm instance to move it to (required, except with --recover)')
    .option('--no-bypass', 'copy shared RAM too (turns bypass-shared-memory off)')
    .option(
      '--postcopy',
      'turn postcopy-ram on: the VM runs on the target at once and its memory follows on ' +
        'demand. Needed to move a VM whose RAM is a shared region to a vmm on another host ' +
        "(the target host's memstore fetches the pages from the source host's)",
    )
    .option(
      '--recover',
      'resume a post-copy that lost its source (status postcopy-paused) once the source ' +
        'host is back: its memory service is asked again for the missing pages',
    )
    .option(
      '--source-memstore <host:port>',
      "with --recover: the source host's memstore address, when it moved",
    )
    .option('--downtime-limit <ms>', 'largest guest pause pre-copy aims for, in milliseconds')
    .option('--max-bandwidth <rate>', 'RAM bandwidth cap in bytes/s (e.g. 100M, 1G; 0 = unlimited)')
    .option(
      '--max-postcopy-bandwidth <rate>',
      'with --postcopy: cap on the background fill in bytes/s (pages the guest asks for are ' +
        'never held back; 0 = unlimited)',
    )
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
        'in place and only device state and private RAM move; to another host, --postcopy ' +
        'moves shared RAM on demand); shows progress until it ends',
    )
    .action(
      run(
        async (
          ctx,
          name: string,
          opts: ParameterFlags & {
            to?: string;
            bypass: boolean;
            capability: string[];
            detach?: boolean;
            postcopy?: boolean;
            recover?: boolean;
            sourceMemstore?: string;
          },
        ) => {
          if (opts.recover === true) return recover(ctx, name, opts);
          if (opts.sourceMemstore !== undefined) {
            throw new CliError('CLI_USAGE', '--source-memstore goes with --recover only');
          }
          if (opts.to === undefined) {
            throw new CliError(
              'CLI_USAGE',
              'name the target with --to VMM (`vmctl status` lists them), or resume a paused ' +
                'post-copy with --recover',
            );
          }
          const overrides: MigrationCapabilityOverrides = usage(() => {
            let o: MigrationCapabilityOverrides = { 'bypass-shared-memory': opts.bypass };
            if (opts.postcopy === true) o = { ...o, 'postcopy-ram': true };
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

/** `vmctl migrate NAME --recover`: reconnects a paused post-copy. */
async function recover(
  ctx: CommandContext,
  name: string,
  opts: { to?: string; postcopy?: boolean; capability: string[]; sourceMemstore?: string },
): Promise<number> {
  if (opts.to !== undefined || opts.postcopy === true || opts.capability.length > 0) {
    throw new CliError(
      'CLI_USAGE',
      '--recover resumes the post-copy the VM is in; it takes no --to, --postcopy or --capability',
    );
  }
  const r = await jobs(ctx.clients).recover({
    vm: name,
    sourceMemstore: opts.sourceMemstore ?? '',
  });
  ctx.print(
    { vm: name, vmm: r.vmm, regions: r.regions },
    () => `recovered the post-copy of ${name} on ${r.vmm}: ${r.regions.join(', ')} reconnected\n`,
  );
  return EXIT.ok;
}
