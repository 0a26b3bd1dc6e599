import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import {
  pageRunsText,
  snapshotJson,
  snapshotMemory,
  snapshots,
  type SnapshotView,
} from '../api/snapshots.js';
import { CliError } from '../errors.js';
import { renderFields, renderTable } from '../output/render.js';
import { TransferProgress } from '../output/transfer.js';
import { formatBytes } from '../output/units.js';
import type { CommandRunner } from './runner.js';

/** The table of `snapshot list` and `template list`. */
export function renderSnapshotList(list: SnapshotView[]): string {
  return renderTable(
    ['NAME', 'KIND', 'TEMPLATE', 'VM', 'MEMORY', 'STORED', 'CLONES', 'PARENT', 'DEPTH', 'CREATED'],
    list.map((s) => [
      s.name,
      s.kind,
      s.template ? 'yes' : 'no',
      s.vm === '' ? '-' : s.vmm === '' ? s.vm : `${s.vm}@${s.vmm}`,
      formatBytes(snapshotMemory(s)),
      formatBytes(s.storedBytes),
      String(s.clones.length),
      s.parent === '' ? '-' : s.parent,
      String(s.depth),
      s.createdAt ?? '-',
    ]),
  );
}

/** The `parent` field: the chain below a layer, parent first, or `-` for a standalone one. */
function parentText(s: SnapshotView, below: SnapshotView[] | undefined): string {
  if (s.parent === '') return '-';
  const names = below !== undefined && below.length > 0 ? below.map((b) => b.name) : [s.parent];
  const chain = [s.name, ...names].join(' -> ');
  return (
    `${s.parent} (a layer, depth ${s.depth}: ${chain}; its blocks hold only the pages that ` +
    'differ from its parent)'
  );
}

/** A block's line: where it is, its region, what it stores, and for a layer its pages. */
function blockText(s: SnapshotView, b: SnapshotView['blocks'][number]): string {
  let text =
    `0x${b.guestBase.toString(16)} ${formatBytes(b.size)}, region ${b.regionName} ` +
    `(${b.owned ? 'owned by the snapshot' : 'pinned: a region a user made'}), ` +
    `${formatBytes(b.storedBytes)} stored`;
  if (s.parent !== '') {
    text +=
      `; layer pages: ${b.layerPageCount} of ${b.size / 4096n} (${pageRunsText(b.layerPages)}), ` +
      `the rest from ${s.parent}`;
  }
  return text;
}

/**
 * The fields of one snapshot: what it holds, where, what it costs, who runs from it. `below`
 * (the snapshots under a layer, parent first) shows its whole chain.
 */
export function snapshotFields(s: SnapshotView, below?: SnapshotView[]): [string, string][] {
  const fields: [string, string][] = [
    ['name', s.name],
    ['id', s.id],
    ['kind', s.kind],
    ['template', s.template ? 'yes' : 'no'],
    ['created', s.createdAt ?? '-'],
    ['saved from', s.vm !== '' ? `VM ${s.vm} on ${s.vmm}` : '-'],
    ['memory', `${formatBytes(snapshotMemory(s))} in ${s.blocks.length} block(s)`],
    [
      'stored',
      `${formatBytes(s.storedBytes)} (device state ${formatBytes(s.deviceStateBytes)} plus the ` +
        'regions it owns)',
    ],
    ['parent', parentText(s, below)],
    ['clones', s.clones.length === 0 ? 'none' : `${s.clones.length}: ${s.clones.join(', ')}`],
  ];
  for (const b of s.blocks) fields.push([`block ${b.id}`, blockText(s, b)]);
  return fields;
}

/** The JSON of `show`: the snapshot and, for a layer, the names below it (parent first). */
export function snapshotShowJson(s: SnapshotView, below: SnapshotView[]): Record<string, unknown> {
  return { ...snapshotJson(s), parentChain: below.map((b) => b.name) };
}

/** What `snapshot flatten` and `template flatten` print. */
export function renderFlattened(from: SnapshotView, flat: SnapshotView): string {
  return (
    `flattened ${from.template ? 'template' : 'snapshot'} ${from.name} (depth ${from.depth}) ` +
    `into ${flat.template ? 'template' : 'snapshot'} ${flat.name}: standalone, ` +
    `${formatBytes(snapshotMemory(flat))} of memory, ${formatBytes(flat.storedBytes)} stored; ` +
    `${from.name} stays\n` +
    renderFields(snapshotFields(flat))
  );
}

/** Help text shared by `snapshot flatten` and `template flatten`. */
export const FLATTEN_HELP =
  '\nA layer is a snapshot saved from a clone: its blocks hold only the pages the clone wrote,\n' +
  'the rest come from its parent, and so on down to a standalone snapshot. Flattening copies\n' +
  "the composed pages (the root's, then each layer's over them) into new regions of its own:\n" +
  'the copy has no parent, the same device state and template flag, and the original and its\n' +
  'parents stay (delete them when no longer needed). A standalone snapshot is refused.\n';

/** `vmctl snapshot list|show|flatten|delete|export|import`: memstore's snapshots. */
export function registerSnapshot(program: Command, run: CommandRunner): void {
  const cmd = program
    .command('snapshot')
    .description(
      "memstore's snapshots: saved VMs (device state plus a sealed region per RAM block); " +
        'list, show, flatten a layer, delete, export to a file, import from one',
    );

  cmd
    .command('list')
    .alias('ls')
    .description(
      'list snapshots and templates with their kind, parent and depth (layers), memory, stored ' +
        'bytes and clones',
    )
    .action(
      run(async (ctx) => {
        const list = await snapshots.list(ctx.clients);
        ctx.print({ snapshots: list.map(snapshotJson) }, () => renderSnapshotList(list));
      }),
    );

  cmd
    .command('show')
    .argument('<snapshot>', 'snapshot name or id')
    .description(
      'show one snapshot: its blocks and their regions, sizes, the VMs that run from it, and for ' +
        'a layer its parent chain and the pages each block holds',
    )
    .addHelpText('after', '\nExample:\n  vmctl snapshot show kv-20261125-221000 --output json')
    .action(
      run(async (ctx, ref: string) => {
        const s = await snapshots.get(ctx.clients, ref);
        const below = await snapshots.chain(ctx.clients, s);
        ctx.print({ snapshot: snapshotShowJson(s, below) }, () =>
          renderFields(snapshotFields(s, below)),
        );
      }),
    );

  cmd
    .command('flatten')
    .argument('<snapshot>', 'a layer (a snapshot with a parent): name or id')
    .requiredOption('--as <snapshot>', 'the name of the standalone copy')
    .description(
      'write a layer and the layers below it into one standalone snapshot with regions of its ' +
        'own (the original stays)',
    )
    .addHelpText(
      'after',
      FLATTEN_HELP + '\nExample:\n  vmctl snapshot flatten kv-layer3 --as kv-flat',
    )
    .action(
      run(async (ctx, ref: string, opts: { as: string }) => {
        const from = await snapshots.get(ctx.clients, ref);
        const flat = await snapshots.flatten(ctx.clients, ref, opts.as);
        ctx.print({ snapshot: snapshotJson(flat), flattenedFrom: from.name }, () =>
          renderFlattened(from, flat),
        );
      }),
    );

  cmd
    .command('delete')
    .alias('rm')
    .argument('<snapshot>', 'snapshot name or id')
    .description(
      'delete a snapshot and the regions it owns (refused while a VM runs from it: destroy its ' +
        'clones first)',
    )
    .action(
      run(async (ctx, ref: string) => {
        await snapshots.delete(ctx.clients, ref);
        ctx.print({ deleted: ref }, () => `deleted snapshot ${ref}\n`);
      }),
    );

  cmd
    .command('export')
    .argument('<snapshot>', 'snapshot name or id')
    .argument('<file>', 'the file to write')
    .option('--force', 'replace FILE if it exists')
    .description(
      'write a snapshot to one self-describing file (VM spec, device state and every stored ' +
        'page, CRC-checked), to import elsewhere',
    )
    .addHelpText(
      'after',
      '\nThe bytes go to FILE.partial, which becomes FILE once every byte arrived and is on disk;\n' +
        'a failed export leaves no FILE. A terminal shows the progress.\n' +
        '\nExample:\n  vmctl snapshot export kv-20261125-221000 /backup/kv.snap',
    )
    .action(
      run(async (ctx, ref: string, file: string, opts: { force?: boolean }) => {
        if (existsSync(file) && opts.force !== true) {
          throw new CliError('CLI_USAGE', `${file} exists; pass --force to replace it`);
        }
        const progress = new TransferProgress(
          `export ${ref}`,
          (t) => ctx.io.err(t),
          ctx.output !== 'json' && process.stderr.isTTY === true,
        );
        const bytes = await snapshots.export(ctx.clients, ref, file, (d, t) =>
          progress.update(d, t),
        );
        progress.done();
        ctx.print(
          { exported: { snapshot: ref, file, bytes } },
          () => `exported snapshot ${ref} to ${file} (${formatBytes(bytes)})\n`,
        );
      }),
    );

  cmd
    .command('import')
    .argument('<file>', 'a file `snapshot export` wrote')
    .option('--as <snapshot>', 'the name to give it (default: the name in the file)')
    .option('--template', 'mark it a template')
    .description(
      'create a snapshot from an exported file, with regions of its own (memstore checks every ' +
        'length and CRC first; a refused file leaves nothing behind)',
    )
    .addHelpText('after', '\nExample:\n  vmctl snapshot import /backup/kv.snap --as kv-restored')
    .action(
      run(async (ctx, file: string, opts: { as?: string; template?: boolean }) => {
        if (!existsSync(file)) throw new CliError('CLI_USAGE', `${file} does not exist`);
        const progress = new TransferProgress(
          `import ${file}`,
          (t) => ctx.io.err(t),
          ctx.output !== 'json' && process.stderr.isTTY === true,
        );
        const s = await snapshots.import(
          ctx.clients,
          file,
          { name: opts.as ?? '', template: opts.template === true },
          (d, t) => progress.update(d, t),
        );
        progress.done();
        ctx.print(
          { snapshot: snapshotJson(s) },
          () =>
            `imported ${file} as ${s.template ? 'template' : 'snapshot'} ${s.name} ` +
            `(${formatBytes(snapshotMemory(s))} of memory, ${formatBytes(s.storedBytes)} stored)\n`,
        );
      }),
    );
}
