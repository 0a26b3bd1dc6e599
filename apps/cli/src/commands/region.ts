import { Option, type Command } from 'commander';
import {
  regions,
  REGION_KINDS,
  type FencedView,
  type HolderView,
  type RegionKindName,
  type RegionView,
} from '../api/regions.js';
import { CliError } from '../errors.js';
import { formatBytes, parseSize } from '../output/units.js';
import { renderFields, renderTable } from '../output/render.js';
import type { CommandRunner } from './runner.js';

function leaseText(r: RegionView): string {
  return r.lease === null ? '-' : `${r.lease.holder}@${r.lease.epoch}`;
}

function renderList(list: RegionView[]): string {
  return renderTable(
    ['NAME', 'KIND', 'STATE', 'SIZE', 'ALLOCATED', 'LEASE', 'HOLDER', 'CLONES', 'ID'],
    list.map((r) => [
      r.name,
      r.kind,
      r.state,
      formatBytes(r.size),
      formatBytes(r.allocated),
      leaseText(r),
      r.holder?.liveness ?? '-',
      String(r.clones),
      r.id,
    ]),
  );
}

/** "alive (vmm vmm-a, pid 1234, connected, since …)" and the like. */
function holderText(h: HolderView): string {
  const facts = [
    ...(h.vmm !== '' ? [`vmm ${h.vmm}`] : []),
    ...(h.pid > 0 ? [`pid ${h.pid}`] : []),
    ...(h.liveness !== 'gone' ? [h.connected ? 'connected' : 'not connected'] : []),
    ...(h.since !== undefined ? [`since ${h.since}`] : []),
  ];
  const what =
    h.liveness === 'alive'
      ? 'alive'
      : h.liveness === 'gone'
        ? 'gone (memstore fences its lease)'
        : 'unknown (no session from its vmm, or disconnected: `region release --force` may take the lease)';
  return facts.length === 0 ? what : `${what}; ${facts.join(', ')}`;
}

/** "vmm-a/vm1 at 2026-…: its vmm process was gone (epoch now 4)". */
function fencedText(f: FencedView): string {
  const why =
    f.reason === 'operator'
      ? 'released by force'
      : f.reason === 'holder-gone'
        ? 'its vmm process was gone'
        : 'fenced';
  return `${f.holder} at ${f.at ?? '?'}: ${why} (epoch now ${f.epoch}; region and memory kept)`;
}

function renderOne(r: RegionView): string {
  return renderFields([
    ['name', r.name],
    ['id', r.id],
    ['kind', r.kind],
    ['state', r.state],
    ['size', `${formatBytes(r.size)} (${r.size} bytes)`],
    ['allocated', `${formatBytes(r.allocated)} (${r.allocated} bytes)`],
    ['path', r.path],
    ['identity', r.identity],
    [
      'lease',
      r.lease === null
        ? 'none'
        : `${r.lease.holder}, epoch ${r.lease.epoch}, since ${r.lease.grantedAt ?? '?'}`,
    ],
    ...(r.holder !== null ? [['holder', holderText(r.holder)] as [string, string]] : []),
    ...(r.fenced !== null ? [['fenced', fencedText(r.fenced)] as [string, string]] : []),
    ['mapped by', r.mappedBy.length === 0 ? 'nobody' : r.mappedBy.join(', ')],
    ['clones', String(r.clones)],
    ['parent', r.parentId === '' ? '-' : r.parentId],
    ['created', r.createdAt ?? '-'],
  ]);
}

/** `vmctl region list|show|create|release|delete`: memstore regions. */
export function registerRegion(program: Command, run: CommandRunner): void {
  const region = program
    .command('region')
    .description(
      'memstore regions: the files that hold guest RAM (list, show, create, release, delete)',
    );

  region
    .command('list')
    .alias('ls')
    .description(
      "list regions with size, allocation, lease, whether the lease holder's vmm is alive, and clones",
    )
    .action(
      run(async (ctx) => {
        const list = await regions.list(ctx.clients);
        ctx.print({ regions: list }, () => renderList(list));
      }),
    );

  region
    .command('show')
    .argument('<region>', 'region name or id')
    .description(
      'show one region in detail: who holds its lease and whether that vmm process is alive',
    )
    .action(
      run(async (ctx, ref: string) => {
        const r = await regions.get(ctx.clients, ref);
        ctx.print({ region: r }, () => renderOne(r));
      }),
    );

  region
    .command('create')
    .argument('<name>', 'region name: lower-case letters, digits, ".", "_", "-"')
    .requiredOption(
      '-s, --size <size>',
      'size with a binary unit, e.g. 64M, 2G (a multiple of 4 KiB)',
    )
    .addOption(
      new Option('-k, --kind <kind>', 'volatile (tmpfs) or persistent (disk)')
        .choices(REGION_KINDS)
        .default('volatile'),
    )
    .description('create a zero-filled region')
    .action(
      run(async (ctx, name: string, opts: { size: string; kind: RegionKindName }) => {
        const r = await regions.create(
          ctx.clients,
          name,
          parseSize(opts.size, '--size'),
          opts.kind,
        );
        ctx.print(
          { region: r },
          () => `created region ${r.name} (${formatBytes(r.size)}, ${r.kind}) id ${r.id}\n`,
        );
      }),
    );

  region
    .command('release')
    .argument('<region>', 'region name or id')
    .option(
      '--force',
      "take the lease from its holder: refused while the holder's vmm process is alive",
    )
    .description(
      "take a region's lease from a VM whose vmm process is gone or unknown (a vmm killed " +
        'before it released it): the lease is fenced (holder cleared, epoch + 1), the region ' +
        'and its memory are kept; then `region delete` or a new VM may use it',
    )
    .action(
      run(async (ctx, ref: string, opts: { force?: boolean }) => {
        if (opts.force !== true) {
          throw new CliError(
            'CLI_USAGE',
            `region release takes the lease of ${ref} away from its holder: say --force. ` +
              "memstore refuses while the holder's vmm process is alive (stop or migrate that " +
              'VM instead: destroying it releases the lease) and fences the lease of a vmm ' +
              'process it finds gone by itself; see `vmctl region show ' +
              `${ref}\` for the holder and whether it is alive`,
          );
        }
        const { region: r, fenced } = await regions.forceRelease(ctx.clients, ref);
        ctx.print({ region: r, fenced }, () =>
          fenced === null
            ? `region ${r.name} is not leased; nothing to release\n`
            : `released region ${r.name}: took the lease from ${fenced.holder} ` +
              `(${fenced.reason === 'holder-gone' ? 'its vmm process was gone' : 'forced'}); ` +
              `epoch now ${fenced.epoch}, region and memory kept\n`,
        );
      }),
    );

  region
    .command('delete')
    .alias('rm')
    .argument('<region>', 'region name or id')
    .description(
      'delete a region and its memory (refused while it is leased or has clones; a lease kept ' +
        'by a dead VM: `region release --force` first)',
    )
    .action(
      run(async (ctx, ref: string) => {
        await regions.delete(ctx.clients, ref);
        ctx.print({ deleted: ref }, () => `deleted region ${ref}\n`);
      }),
    );
}
