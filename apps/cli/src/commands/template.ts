import type { Command } from 'commander';
import { resolveGuest } from '../api/guest-image.js';
import { jobs, type JobView } from '../api/jobs.js';
import { snapshotJson, snapshots, type SnapshotView } from '../api/snapshots.js';
import { vms, type VmmRef } from '../api/vms.js';
import type { CommandContext } from '../context.js';
import { CliError, EXIT } from '../errors.js';
import { renderFields, renderTable } from '../output/render.js';
import { formatMicros } from '../output/stats.js';
import { formatBytes, parseDuration, parseSize } from '../output/units.js';
import { followJob, latencyText, printJob } from './jobs.js';
import type { CommandRunner } from './runner.js';
import { renderSaved, savedSnapshot } from './save.js';
import {
  FLATTEN_HELP,
  renderFlattened,
  renderSnapshotList,
  snapshotFields,
  snapshotShowJson,
} from './snapshot.js';
import { parseArgs } from './guest-args.js';

/** One clone of a template as `template show` reports it: what it costs its vmm's host. */
export interface CloneUsage {
  /** Its lease holder `<vmm>/<vm>`. */
  holder: string;
  vm: string;
  vmm: string;
  state: string;
  pssBytes: bigint | null;
  privateDirtyBytes: bigint | null;
  rssBytes: bigint | null;
  /** Why it could not be measured, or ''. */
  error: string;
}

/** GetVm of every clone on its vmm: PSS, private dirty and RSS; a failure is noted per clone. */
async function cloneUsage(ctx: CommandContext, t: SnapshotView): Promise<CloneUsage[]> {
  if (t.clones.length === 0) return [];
  let instances: Map<string, VmmRef>;
  let unlisted = '';
  try {
    instances = new Map((await vms.instances(ctx.clients)).map((v) => [v.id, v]));
  } catch (err) {
    instances = new Map();
    unlisted = `the migrator did not list the vmm instances (${(err as Error).message})`;
  }
  return Promise.all(
    t.clones.map(async (holder): Promise<CloneUsage> => {
      const slash = holder.indexOf('/');
      const vmm = slash > 0 ? holder.slice(0, slash) : '';
      const vm = holder.slice(slash + 1);
      const none = {
        holder,
        vm,
        vmm,
        state: '-',
        pssBytes: null,
        privateDirtyBytes: null,
        rssBytes: null,
      };
      const ref = instances.get(vmm);
      if (ref === undefined) {
        return { ...none, error: unlisted || `vmm ${vmm || '?'} is not registered` };
      }
      try {
        const v = await vms.on(ctx.clients, ref, vm, true);
        if (v === null) return { ...none, error: `${vmm} has no VM ${vm}` };
        return {
          ...none,
          state: v.state,
          pssBytes: v.memory?.pssBytes ?? null,
          privateDirtyBytes: v.memory?.privateDirtyBytes ?? null,
          rssBytes: v.memory?.rssBytes ?? null,
          error: v.memory === null ? `${vmm} did not measure it` : '',
        };
      } catch (err) {
        return { ...none, error: (err as Error).message };
      }
    }),
  );
}

const bytesOrDash = (n: bigint | null) => (n === null ? '-' : formatBytes(n));

/**
 * `template show`: the template (for a layer, its parent chain `below`, parent first), then what
 * is shared (its stored bytes) and what each clone owns.
 */
export function renderTemplate(
  t: SnapshotView,
  clones: CloneUsage[],
  below: SnapshotView[] = [],
): string {
  let text = renderFields(snapshotFields(t, below));
  const chain = below.reduce((n, s) => n + s.storedBytes, t.storedBytes);
  const what =
    below.length === 0
      ? "(the template's pages)"
      : `(this layer's ${formatBytes(t.storedBytes)} and its parents' pages)`;
  text +=
    `\nshared: ${formatBytes(chain)} stored once for every clone ${what}; ` +
    "each clone's private dirty bytes are its own, its PSS counts its share of the rest\n\n";
  text += renderTable(
    ['CLONE', 'VMM', 'STATE', 'PSS', 'PRIVATE DIRTY', 'RSS', 'NOTE'],
    clones.map((c) => [
      c.vm,
      c.vmm,
      c.state,
      bytesOrDash(c.pssBytes),
      bytesOrDash(c.privateDirtyBytes),
      bytesOrDash(c.rssBytes),
      c.error,
    ]),
  );
  const measured = clones.filter((c) => c.pssBytes !== null);
  if (measured.length > 0) {
    const sum = (f: (c: CloneUsage) => bigint | null) =>
      measured.reduce((s, c) => s + (f(c) ?? 0n), 0n);
    text +=
      `total of ${measured.length} clone(s): PSS ${formatBytes(sum((c) => c.pssBytes))}, ` +
      `private dirty ${formatBytes(sum((c) => c.privateDirtyBytes))}, ` +
      `RSS ${formatBytes(sum((c) => c.rssBytes))}\n`;
  }
  return text;
}

/** A template by name, refusing a snapshot that is not one. */
async function template(ctx: CommandContext, ref: string): Promise<SnapshotView> {
  const t = await snapshots.get(ctx.clients, ref);
  if (!t.template) {
    throw new CliError(
      'CLI_USAGE',
      `${ref} is a snapshot, not a template; see it with \`vmctl snapshot show ${ref}\``,
    );
  }
  return t;
}

const collect = (v: string, prev: string[]) => [...prev, v];

/** `vmctl template create|list|show|flatten|delete`. */
export function registerTemplate(program: Command, run: CommandRunner): void {
  const cmd = program
    .command('template')
    .description(
      'templates: snapshots made to be cloned (a guest booted to its ready point and saved); ' +
        'create, list, show (with what each clone costs), flatten a layered one, delete',
    );

  registerTemplateCreate(cmd, run);

  cmd
    .command('list')
    .alias('ls')
    .description(
      'list templates with their parent and depth (layered templates), memory, stored bytes and ' +
        'clones',
    )
    .action(
      run(async (ctx) => {
        const list = await snapshots.list(ctx.clients, true);
        ctx.print({ templates: list.map(snapshotJson) }, () => renderSnapshotList(list));
      }),
    );

  cmd
    .command('show')
    .argument('<template>', 'template name or id')
    .description(
      'show a template and its clones: the bytes it stores once for all of them, and for each ' +
        'clone its PSS and private dirty bytes (what it costs on its host)',
    )
    .addHelpText('after', '\nExample:\n  vmctl template show kv')
    .action(
      run(async (ctx, ref: string) => {
        const t = await template(ctx, ref);
        const below = await snapshots.chain(ctx.clients, t);
        const clones = await cloneUsage(ctx, t);
        ctx.print({ template: snapshotShowJson(t, below), clones }, () =>
          renderTemplate(t, clones, below),
        );
      }),
    );

  cmd
    .command('flatten')
    .argument('<template>', 'a layered template (one with a parent): name or id')
    .requiredOption('--as <template>', 'the name of the standalone copy')
    .description(
      'write a layered template and the layers below it into one standalone template with ' +
        'regions of its own; new clones of the copy map one region per block (the original stays)',
    )
    .addHelpText('after', FLATTEN_HELP + '\nExample:\n  vmctl template flatten kv-v3 --as kv-flat')
    .action(
      run(async (ctx, ref: string, opts: { as: string }) => {
        const from = await template(ctx, ref);
        const flat = await snapshots.flatten(ctx.clients, ref, opts.as);
        ctx.print({ template: snapshotJson(flat), flattenedFrom: from.name }, () =>
          renderFlattened(from, flat),
        );
      }),
    );

  cmd
    .command('delete')
    .alias('rm')
    .argument('<template>', 'template name or id')
    .description('delete a template and its memory (refused while clones run from it)')
    .action(
      run(async (ctx, ref: string) => {
        await template(ctx, ref);
        await snapshots.delete(ctx.clients, ref);
        ctx.print({ deleted: ref }, () => `deleted template ${ref}\n`);
      }),
    );
}

/** What `clone` prints: the VMs made and the clone latency, p50 and p99. */
export function renderCloned(j: JobView): string {
  const r = j.snapshotResult!;
  return renderFields([
    ['template', r.snapshot],
    ['vms', `${r.vms.length} on ${j.targetVmm}: ${r.vms.join(' ')}`],
    ['running after', latencyText(r.runningAfterUs)],
    ['vmm time', formatMicros(r.durationUs)],
    ['job', j.id],
  ]);
}

/** `vmctl template create`: from a guest booted to its ready doorbell, or from a running VM. */
function registerTemplateCreate(cmd: Command, run: CommandRunner): void {
  cmd
    .command('create')
    .argument('<name>', 'the template name (a guest boots as a VM of this name, then is saved)')
    .option(
      '-g, --guest <guest>',
      'boot this guest and save it once it rings its ready doorbell: a built-in name, a local ' +
        "ELF file (sent), or a name in the vmm's --guest-dir (see `vmctl vm create --help`)",
    )
    .option('-m, --memory <size>', 'RAM of the booted guest (with --guest), e.g. 256M')
    .option(
      '--arg <key=value>',
      'argument for the booted guest (repeatable)',
      collect,
      [] as string[],
    )
    .option(
      '--from-vm <vm>',
      'save this running VM as the template instead (paused for the save only)',
    )
    .option(
      '--vmm <id>',
      'the vmm instance that boots the guest (default: the one with the fewest VMs)',
    )
    .option('--ready-timeout <duration>', "how long to wait for the guest's ready doorbell", '30s')
    .option('-d, --detach', 'print the job and return at once instead of following it')
    .description(
      'make a template: boot a guest on a shared region, wait for its ready doorbell, and seal ' +
        'that region in place as the template (the VM is freed); or save a running VM as one',
    )
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  vmctl template create kv --guest kvserver --memory 256M\n' +
        '  vmctl template create kv-big --guest kvserver --memory 1G --arg kv.size=100000 --ready-timeout 2m\n' +
        '  vmctl template create web --from-vm web-golden\n' +
        '\nA guest that powers off or never rings ready within --ready-timeout makes no template\n' +
        '(its VM is destroyed). Then start clones with `vmctl clone NAME --count N`.',
    )
    .action(
      run(
        async (
          ctx,
          name: string,
          opts: {
            guest?: string;
            memory?: string;
            arg: string[];
            fromVm?: string;
            vmm?: string;
            readyTimeout: string;
            detach?: boolean;
          },
        ) => {
          if ((opts.guest === undefined) === (opts.fromVm === undefined)) {
            throw new CliError(
              'CLI_USAGE',
              'say where the template comes from: --guest G --memory SIZE, or --from-vm VM (one of them)',
            );
          }
          if (opts.guest !== undefined && opts.memory === undefined) {
            throw new CliError(
              'CLI_USAGE',
              '--guest needs --memory: the RAM of the booted guest (e.g. 256M)',
            );
          }
          if (opts.fromVm !== undefined && (opts.memory !== undefined || opts.arg.length > 0)) {
            throw new CliError('CLI_USAGE', '--memory and --arg go with --guest, not --from-vm');
          }
          const guest = opts.guest !== undefined ? resolveGuest(opts.guest) : undefined;
          const job = await jobs(ctx.clients).createTemplate({
            name,
            source:
              guest !== undefined
                ? { guest: guest.name, image: guest.image }
                : { fromVm: opts.fromVm! },
            memory: opts.memory !== undefined ? parseSize(opts.memory, '--memory') : 0n,
            vmm: opts.vmm ?? '',
            args: parseArgs(opts.arg),
            readyTimeoutMs: parseDuration(opts.readyTimeout, '--ready-timeout'),
          });
          if (opts.detach === true) {
            printJob(ctx, job, 'started');
            return EXIT.ok;
          }
          return followJob(ctx, job, {
            table: async (j) =>
              renderSaved(j, await savedSnapshot(ctx, j), opts.guest !== undefined),
          });
        },
      ),
    );
}

/** `vmctl clone TEMPLATE`: VMs started from a template. */
export function registerClone(program: Command, run: CommandRunner): void {
  program
    .command('clone')
    .argument('<template>', 'the template (or any snapshot) to clone')
    .option('-n, --count <n>', 'how many VMs, 1 to 1000', '1')
    .option('--vmm <id>', 'the vmm instance to run them on (default: the one with the fewest VMs)')
    .option(
      '--name-prefix <prefix>',
      'clones are PREFIX-1, PREFIX-2, ... after the numbers in use (default: the template name)',
    )
    .option('--paused', 'leave the clones paused at the template point')
    .option('-d, --detach', 'print the job and return at once instead of following it')
    .description(
      'start VMs from a template: each maps its memory copy-on-write (sharing every page it does ' +
        'not write) and runs from the ready point with its own generation id and entropy',
    )
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  vmctl clone kv --count 10          # kv-1 .. kv-10\n' +
        '  vmctl clone kv --count 100 --name-prefix web --vmm vmm-b\n' +
        '\nPrints the VMs it made and the clone latency (request to guest running), p50 and p99.',
    )
    .action(
      run(
        async (
          ctx,
          name: string,
          opts: {
            count: string;
            vmm?: string;
            namePrefix?: string;
            paused?: boolean;
            detach?: boolean;
          },
        ) => {
          const count = Number(opts.count);
          if (!Number.isInteger(count) || count < 1 || count > 1000) {
            throw new CliError('CLI_USAGE', `--count ${opts.count} is not a number from 1 to 1000`);
          }
          const job = await jobs(ctx.clients).clone({
            template: name,
            count,
            vmm: opts.vmm ?? '',
            namePrefix: opts.namePrefix ?? '',
            paused: opts.paused === true,
          });
          if (opts.detach === true) {
            printJob(ctx, job, 'started');
            return EXIT.ok;
          }
          return followJob(ctx, job, { table: async (j) => renderCloned(j) });
        },
      ),
    );
}
