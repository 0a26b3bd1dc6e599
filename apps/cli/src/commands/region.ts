import { Option, type Command } from 'commander';
import { regions, REGION_KINDS, type RegionKindName, type RegionView } from '../api/regions.js';
import { formatBytes, parseSize } from '../output/units.js';
import { renderFields, renderTable } from '../output/render.js';
import type { CommandRunner } from './runner.js';

function leaseText(r: RegionView): string {
  return r.lease === null ? '-' : `${r.lease.holder}@${r.lease.epoch}`;
}

function renderList(list: RegionView[]): string {
  return renderTable(
    ['NAME', 'KIND', 'STATE', 'SIZE', 'ALLOCATED', 'LEASE', 'CLONES', 'ID'],
    list.map((r) => [
      r.name,
      r.kind,
      r.state,
      formatBytes(r.size),
      formatBytes(r.allocated),
      leaseText(r),
      String(r.clones),
      r.id,
    ]),
  );
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
    ['mapped by', r.mappedBy.length === 0 ? 'nobody' : r.mappedBy.join(', ')],
    ['clones', String(r.clones)],
    ['parent', r.parentId === '' ? '-' : r.parentId],
    ['created', r.createdAt ?? '-'],
  ]);
}

/** `vmctl region list|show|create|delete`: memstore regions. */
export function registerRegion(program: Command, run: CommandRunner): void {
  const region = program
    .command('region')
    .description('memstore regions: the files that hold guest RAM (list, show, create, delete)');

  region
    .command('list')
    .alias('ls')
    .description('list regions with size, allocation, lease and clones')
    .action(
      run(async (ctx) => {
        const list = await regions.list(ctx.clients);
        ctx.print({ regions: list }, () => renderList(list));
      }),
    );

  region
    .command('show')
    .argument('<region>', 'region name or id')
    .description('show one region in detail')
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
    .command('delete')
    .alias('rm')
    .argument('<region>', 'region name or id')
    .description('delete a region (refused while it is leased or has clones)')
    .action(
      run(async (ctx, ref: string) => {
        await regions.delete(ctx.clients, ref);
        ctx.print({ deleted: ref }, () => `deleted region ${ref}\n`);
      }),
    );
}
