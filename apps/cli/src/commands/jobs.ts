import type { Command } from 'commander';
import { MIGRATION_CAPABILITIES } from '@handoff/qapi';
import { isSnapshotJob, jobEnded, jobJson, jobs, type JobView } from '../api/jobs.js';
import type { CommandContext } from '../context.js';
import { CliError, EXIT } from '../errors.js';
import { ProgressRenderer, formatDuration } from '../output/progress.js';
import { renderFields, renderTable } from '../output/render.js';
import { formatMicros, percentile } from '../output/stats.js';
import { formatBytes } from '../output/units.js';
import type { CommandRunner } from './runner.js';

function route(j: JobView): string {
  // a snapshot job works on one instance: the VM's (save) or the one that starts VMs
  if (isSnapshotJob(j)) return j.sourceVmm || j.targetVmm || '?';
  return `${j.sourceVmm || '?'} -> ${j.targetVmm || '?'}`;
}

function label(j: JobView): string {
  if (j.kind === 'live-update') return `${j.id} live-update`;
  return isSnapshotJob(j) ? `${j.id} ${j.kind}${j.vm !== '' ? ` ${j.vm}` : ''}` : `${j.id} ${j.vm}`;
}

function note(j: JobView): string | undefined {
  return j.kind === 'live-update' ? `${j.info.iteration}/${j.children.length} VMs` : undefined;
}

/** A job's time: whole milliseconds under a second (a bypass migration takes a few), else as a duration. */
function ms(n: number): string {
  return n < 1000 ? `${Math.round(n)} ms` : formatDuration(n / 1000);
}

/** How the leases moved, in words. */
const LEASE_MOVE_WORDS = {
  armed: 'lease flipped where memstore armed it',
  'lease-channel': 'lease moved over the lease channel',
  stream: 'lease taken at the final marker',
  'page-source': "memory filled on demand through the target host's memstore",
  none: 'no lease to move',
} as const;

/** Where a job left its VM, in words. */
const WHERE_WORDS = {
  target: 'on the target',
  source: 'on the source',
  lost: 'lost',
  unknown: 'unknown',
} as const;

/** "p50 1.000 ms, p99 1.200 ms" of clone latencies (µs). */
export function latencyText(us: readonly number[]): string {
  if (us.length === 0) return '-';
  return `p50 ${formatMicros(percentile(us, 50))}, p99 ${formatMicros(percentile(us, 99))}`;
}

/** The table fields of a save, restore, template or clone job. */
function snapshotJobFields(j: JobView): [string, string][] {
  const fields: [string, string][] = [
    ['job', `${j.id} (${j.kind})`],
    ...(j.vm !== '' ? ([['vm', j.vm]] as [string, string][]) : []),
    ['vmm', route(j)],
    ['status', j.info.status],
  ];
  if (j.info.errorDesc !== undefined) fields.push(['error', j.info.errorDesc]);
  const r = j.snapshotResult;
  if (r !== undefined) {
    fields.push([j.kind === 'template' ? 'template' : 'snapshot', r.snapshot]);
    if (r.vms.length > 0) fields.push(['vms', r.vms.join(' ')]);
    if (j.kind === 'save' || j.kind === 'template') {
      fields.push([
        'guest paused',
        r.pauseUs > 0 ? formatMicros(r.pauseUs) : 'not at all, or not known',
      ]);
      fields.push(['written', r.bytes > 0 ? formatBytes(r.bytes) : '-']);
    }
    if (r.runningAfterUs.length > 1) fields.push(['running after', latencyText(r.runningAfterUs)]);
    else if (r.runningAfterUs.length === 1) {
      fields.push(['running after', formatMicros(r.runningAfterUs[0]!)]);
    }
    fields.push(['vmm time', formatMicros(r.durationUs)]);
  }
  fields.push(['total time', ms(j.info.totalTimeMs)]);
  return fields;
}

/** The table text of one job: identity, status and its statistics. */
export function renderJob(j: JobView): string {
  if (isSnapshotJob(j)) return renderFields(snapshotJobFields(j));
  const i = j.info;
  const fields: [string, string][] = [
    ['job', `${j.id} (${j.kind})`],
    ...(j.vm !== '' ? ([['vm', j.vm]] as [string, string][]) : []),
    ['route', route(j)],
    ['status', i.status],
  ];
  if (i.errorDesc !== undefined) fields.push(['error', i.errorDesc]);
  if (j.outcome !== undefined)
    fields.push(['vm is', `${WHERE_WORDS[j.outcome.where]}: ${j.outcome.detail}`]);
  fields.push(
    ['total time', ms(i.totalTimeMs)],
    ['setup time', ms(i.setupTimeMs)],
    ['downtime', i.status === 'completed' ? `${(i.downtimeUs / 1000).toFixed(3)} ms` : '-'],
    ['transferred', formatBytes(i.ram.transferred)],
    ['ram total', formatBytes(i.ram.total)],
    ['bypassed', formatBytes(i.ram.bypassedBytes)],
    ['pages', `${i.ram.normal} sent, ${i.ram.zeroPages} zero, ${i.ram.duplicate} duplicate`],
    ['device state', formatBytes(i.deviceBytes)],
    ['capabilities', MIGRATION_CAPABILITIES.filter((c) => j.capabilities[c]).join(', ')],
    ['passes', String(i.iteration)],
    [
      'cpu throttle',
      i.cpuThrottlePercentage > 0 ? `${i.cpuThrottlePercentage}% (auto-converge)` : 'none',
    ],
  );
  if (i.route !== undefined) {
    const r = i.route;
    fields.push([
      'carried by',
      `${r.transport}, ${LEASE_MOVE_WORDS[r.leaseMove]}` +
        `${r.stateEncoding !== undefined ? `, ${r.stateEncoding} state` : ''}` +
        `, target ${r.targetPrebuilt ? 'prebuilt' : 'built from the header'}`,
    ]);
  }
  if (i.timeline !== undefined) {
    const t = i.timeline;
    fields.push([
      'timeline',
      `stopped ${t.stoppedMs.toFixed(2)} ms, state out ${t.statePublishedMs.toFixed(2)} ms, ` +
        `target running ${t.targetRunningMs.toFixed(2)} ms`,
    ]);
  }
  if (j.children.length > 0) fields.push(['children', j.children.join(' ')]);
  return renderFields(fields);
}

function renderJobList(list: JobView[]): string {
  return renderTable(
    ['ID', 'KIND', 'VM', 'ROUTE', 'STATUS', 'TRANSFERRED', 'TOTAL', 'DOWNTIME'],
    list.map((j) => [
      j.id,
      j.kind,
      j.vm ||
        (j.children.length > 0
          ? `${j.children.length} VMs`
          : j.snapshotResult !== undefined && j.snapshotResult.vms.length > 0
            ? `${j.snapshotResult.vms.length} VMs`
            : '-'),
      route(j),
      j.info.status,
      isSnapshotJob(j) ? '-' : formatBytes(j.info.ram.transferred),
      ms(j.info.totalTimeMs),
      isSnapshotJob(j)
        ? j.snapshotResult !== undefined && j.snapshotResult.pauseUs > 0
          ? `${(j.snapshotResult.pauseUs / 1000).toFixed(1)}ms`
          : '-'
        : j.info.status === 'completed'
          ? `${(j.info.downtimeUs / 1000).toFixed(1)}ms`
          : '-',
    ]),
  );
}

/** How a command prints the job it followed once it completed (default: the job). */
export interface JobPrinter {
  /** Extra members of the JSON document beside `job`. */
  json?: (j: JobView) => Promise<Record<string, unknown>>;
  /** The table text. */
  table?: (j: JobView) => Promise<string>;
}

/**
 * Follows a job to its end — a migration with a progress bar on a terminal (plain progress
 * lines otherwise), a save, restore, template or clone job with a line per status (they have
 * no bytes to count), nothing on stderr with --output json — then prints ONE document or table
 * of the final job. Failed or cancelled jobs exit non-zero with the error on stderr.
 */
export async function followJob(
  ctx: CommandContext,
  job: JobView,
  printer: JobPrinter = {},
): Promise<number> {
  let show: (j: JobView) => void = () => undefined;
  let progress: ProgressRenderer | undefined;
  if (ctx.output !== 'json' && isSnapshotJob(job)) {
    let last = '';
    show = (j) => {
      if (j.info.status !== last) ctx.io.err(`${label(j)}: ${j.info.status}\n`);
      last = j.info.status;
    };
    show(job);
  } else if (ctx.output !== 'json') {
    progress = new ProgressRenderer((t) => ctx.io.err(t), process.stderr.isTTY === true);
    show = (j) => progress!.update({ id: j.id, label: label(j), info: j.info, note: note(j) });
  }
  const final = jobEnded(job) ? job : await jobs(ctx.clients).watch(job.id, show);
  progress?.done();
  return printEnded(ctx, final, printer);
}

async function printEnded(ctx: CommandContext, j: JobView, printer: JobPrinter): Promise<number> {
  const completed = j.info.status === 'completed';
  const extra = completed && printer.json !== undefined ? await printer.json(j) : {};
  const table = completed && printer.table !== undefined ? await printer.table(j) : renderJob(j);
  ctx.print({ job: jobJson(j), ...extra }, () => table);
  if (j.info.status === 'completed') return EXIT.ok;
  const why = j.info.errorDesc ?? j.outcome?.detail ?? `the job ended ${j.info.status}`;
  ctx.io.err(`vmctl: job ${j.id} ${j.info.status}: ${why}\n`);
  return EXIT.failed;
}

/** Prints a job that was just started (--detach) or changed. */
export function printJob(ctx: CommandContext, j: JobView, what: string): void {
  ctx.print(
    { job: jobJson(j) },
    () =>
      `${what} job ${j.id} (${j.kind}, ${route(j)}): ${j.info.status}\n` +
      `follow it with \`vmctl jobs watch ${j.id}\`\n`,
  );
}

/** `vmctl jobs ...`: list, show, watch, cancel. */
export function registerJobs(program: Command, run: CommandRunner): void {
  const cmd = program
    .command('jobs')
    .description(
      'jobs of the migrator: migrations, live updates, saves, restores, templates and clones, ' +
        'running and finished',
    );

  cmd
    .command('list')
    .alias('ls')
    .option('-a, --all', 'include finished jobs')
    .description('list running jobs (every job with --all)')
    .action(
      run(async (ctx, opts: { all?: boolean }) => {
        const list = await jobs(ctx.clients).list(opts.all === true);
        ctx.print({ jobs: list.map(jobJson) }, () => renderJobList(list));
      }),
    );

  cmd
    .command('show')
    .argument('<id>', 'job id')
    .description('show one job with its statistics')
    .action(
      run(async (ctx, id: string) => {
        const j = await jobs(ctx.clients).get(id);
        ctx.print({ job: jobJson(j) }, () => renderJob(j));
      }),
    );

  cmd
    .command('watch')
    .argument('<id>', 'job id')
    .description('follow a job to its end with a progress bar; exits non-zero if it fails')
    .action(run(async (ctx, id: string) => followJob(ctx, await jobs(ctx.clients).get(id))));

  cmd
    .command('cancel')
    .argument('<id>', 'job id')
    .option('--wait', 'wait until the job ended (cancelled, or completed if too late)')
    .description(
      'cancel a job: the source vmm stops the migration and the VM keeps running there (a ' +
        'template job is cancelled while its guest boots; saves, restores and clones end by themselves)',
    )
    .action(
      run(async (ctx, id: string, opts: { wait?: boolean }) => {
        const j = await jobs(ctx.clients).cancel(id);
        if (opts.wait !== true) {
          printJob(ctx, j, 'cancelling');
          return EXIT.ok;
        }
        const final = jobEnded(j) ? j : await jobs(ctx.clients).watch(id, () => undefined);
        ctx.print({ job: jobJson(final) }, () => renderJob(final));
        if (final.info.status !== 'cancelled') {
          throw new CliError('CLI_FAILED', `job ${id} ended ${final.info.status}, not cancelled`);
        }
        return EXIT.ok;
      }),
    );
}
