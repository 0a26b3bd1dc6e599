import type { Command } from 'commander';
import { jobs, type JobView } from '../api/jobs.js';
import { snapshots, type SnapshotView } from '../api/snapshots.js';
import type { CommandContext } from '../context.js';
import { EXIT } from '../errors.js';
import { renderFields } from '../output/render.js';
import { formatMicros } from '../output/stats.js';
import { formatBytes } from '../output/units.js';
import { followJob, printJob } from './jobs.js';
import type { CommandRunner } from './runner.js';

/** What the two kinds of save mean, for people. */
const KIND_WORDS: Record<string, string> = {
  bypass: "bypass: the VM's regions sealed in place, nothing copied",
  full: 'full: every written page copied into regions of its own',
  imported: 'imported from a file',
};

/**
 * The snapshot a completed job saved, from memstore (its kind and sizes are memstore's); an
 * error says why it could not be read (the save stands).
 */
export async function savedSnapshot(
  ctx: CommandContext,
  job: JobView,
): Promise<SnapshotView | Error> {
  const name = job.snapshotResult?.snapshot ?? '';
  try {
    return await snapshots.get(ctx.clients, name);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** The lines a save prints: the snapshot, its kind, the guest's pause and the bytes written. */
export function renderSaved(job: JobView, snap: SnapshotView | Error, stopped: boolean): string {
  const r = job.snapshotResult!;
  const fields: [string, string][] = [
    [job.kind === 'template' ? 'template' : 'snapshot', r.snapshot],
    [
      'kind',
      snap instanceof Error
        ? `unknown (memstore did not say: ${snap.message})`
        : (KIND_WORDS[snap.kind] ?? snap.kind),
    ],
    [
      'vm',
      `${job.vm} on ${job.sourceVmm || job.targetVmm}${stopped ? ', destroyed after the save' : ''}`,
    ],
    ['guest paused', r.pauseUs > 0 ? formatMicros(r.pauseUs) : stopped ? '- (stopped)' : '-'],
    ['written', `${formatBytes(r.bytes)} (device state plus copied pages)`],
  ];
  if (!(snap instanceof Error)) fields.push(['stored', formatBytes(snap.storedBytes)]);
  fields.push(['vmm time', formatMicros(r.durationUs)], ['job', job.id]);
  return renderFields(fields);
}

/** `vmctl save VM ...` and `vmctl restore SNAPSHOT ...`. */
export function registerSave(program: Command, run: CommandRunner): void {
  program
    .command('save')
    .argument('<vm>', 'the VM to save')
    .option('--as <snapshot>', 'the snapshot name (default: <vm>-<UTC yyyymmdd-hhmmss>)')
    .option(
      '--full',
      "copy the VM's written pages into new regions instead of sealing its own regions in place " +
        '(the only way for private RAM; for a clone it makes a standalone snapshot, not a layer)',
    )
    .option('--stop', 'destroy the VM after the save instead of resuming it')
    .option('-d, --detach', 'print the job and return at once instead of following it')
    .description(
      'save a VM as a snapshot in memstore. By default, when every RAM block is shared, the ' +
        'guest pauses only while its regions are remapped copy-on-write (a millisecond for a ' +
        'guest that touched little of its RAM, more as it touched more), ' +
        'and memstore seals them in place as it runs on: nothing is copied, whatever the RAM ' +
        'size. A clone (a VM restored or cloned from a snapshot) saves as a layer: only the ' +
        'pages it wrote, over the snapshot it runs from',
    )
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  vmctl save kv                      # snapshot kv-20261125-221000, kv keeps running\n' +
        '  vmctl save kv --as before-upgrade --stop\n' +
        '  vmctl save scratch --full          # a VM with private RAM\n' +
        '  vmctl save kv-3 --as kv-v2         # a clone: a layer of its pages over its template\n' +
        '\nPrints the snapshot, its kind (bypass or full), how long the guest was paused and the\n' +
        'bytes written. Restore it with `vmctl restore SNAPSHOT`.',
    )
    .action(
      run(
        async (
          ctx,
          vm: string,
          opts: { as?: string; full?: boolean; stop?: boolean; detach?: boolean },
        ) => {
          const stop = opts.stop === true;
          const job = await jobs(ctx.clients).save({
            vm,
            snapshot: opts.as ?? '',
            full: opts.full === true,
            stop,
          });
          if (opts.detach === true) {
            printJob(ctx, job, 'started');
            return EXIT.ok;
          }
          let snap: SnapshotView | Error | undefined;
          const saved = async (j: JobView) => (snap ??= await savedSnapshot(ctx, j));
          return followJob(ctx, job, {
            json: async (j) => {
              const s = await saved(j);
              return s instanceof Error ? {} : { snapshot: { name: s.name, kind: s.kind } };
            },
            table: async (j) => renderSaved(j, await saved(j), stop),
          });
        },
      ),
    );

  program
    .command('restore')
    .argument('<snapshot>', 'the snapshot to start a VM from')
    .option('--name <vm>', 'the VM name (default: the name it was saved with)')
    .option('--vmm <id>', 'the vmm instance to run it on (default: the one with the fewest VMs)')
    .option('--paused', 'leave the VM paused at the snapshot point (resume it with `vm resume`)')
    .option('-d, --detach', 'print the job and return at once instead of following it')
    .description(
      "start a VM from a snapshot: it maps the snapshot's memory copy-on-write (it is a clone " +
        'of the snapshot, which memstore keeps while it runs), loads its device state with a ' +
        'new generation id and fresh entropy, and runs',
    )
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  vmctl restore before-upgrade                    # as the VM it was saved from\n' +
        '  vmctl restore before-upgrade --name kv2 --vmm vmm-b --paused',
    )
    .action(
      run(
        async (
          ctx,
          snapshot: string,
          opts: { name?: string; vmm?: string; paused?: boolean; detach?: boolean },
        ) => {
          const job = await jobs(ctx.clients).restore({
            snapshot,
            name: opts.name ?? '',
            vmm: opts.vmm ?? '',
            paused: opts.paused === true,
          });
          if (opts.detach === true) {
            printJob(ctx, job, 'started');
            return EXIT.ok;
          }
          return followJob(ctx, job, {
            table: async (j) => {
              const r = j.snapshotResult!;
              return renderFields([
                [
                  'vm',
                  `${r.vms.join(' ')} on ${j.targetVmm}${opts.paused === true ? ' (paused)' : ''}`,
                ],
                ['snapshot', r.snapshot],
                ['running after', formatMicros(r.runningAfterUs[0] ?? 0)],
                ['job', j.id],
              ]);
            },
          });
        },
      ),
    );
}
