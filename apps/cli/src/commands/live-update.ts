import type { Command } from 'commander';
import { jobs } from '../api/jobs.js';
import { CliError, EXIT } from '../errors.js';
import { followJob, printJob } from './jobs.js';
import { parametersOf, type ParameterFlags } from './migrate.js';
import type { CommandRunner } from './runner.js';

/** `vmctl live-update --from VMM --to VMM [--concurrency N]`. */
export function registerLiveUpdate(program: Command, run: CommandRunner): void {
  program
    .command('live-update')
    .requiredOption('--from <vmm>', 'the vmm instance to empty')
    .requiredOption('--to <vmm>', 'the vmm instance that takes its VMs')
    .option('--concurrency <n>', "VMs migrated at once (default: the migrator's, 2)")
    .option('--downtime-limit <ms>', 'largest guest pause per VM, in milliseconds')
    .option('--max-bandwidth <rate>', 'RAM bandwidth cap per VM in bytes/s (e.g. 100M)')
    .option('-d, --detach', 'print the job and return at once instead of following it')
    .description(
      'move every VM of one vmm instance to another with bypass-shared-memory (e.g. to update ' +
        'the vmm); a VM that fails to move keeps running where it was, the others still move',
    )
    .action(
      run(
        async (
          ctx,
          opts: ParameterFlags & {
            from: string;
            to: string;
            concurrency?: string;
            detach?: boolean;
          },
        ) => {
          let concurrency = 0;
          if (opts.concurrency !== undefined) {
            concurrency = Number(opts.concurrency);
            if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 1024) {
              throw new CliError(
                'CLI_USAGE',
                `--concurrency ${opts.concurrency} is not a whole number from 1 to 1024`,
              );
            }
          }
          const job = await jobs(ctx.clients).liveUpdate({
            fromVmm: opts.from,
            toVmm: opts.to,
            concurrency,
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
