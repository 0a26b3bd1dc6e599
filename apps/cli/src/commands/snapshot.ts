import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { snapshotJson, snapshotMemory, snapshots, type SnapshotView } from '../api/snapshots.js';
import { CliError } from '../errors.js';
import { renderFields, renderTable } from '../output/render.js';
import { TransferProgress } from '../output/transfer.js';
import { formatBytes } from '../output/units.js';
import type { CommandRunner } from './runner.js';

/** The table of `snapshot list` and `template list`. */
export function renderSnapshotList(list: SnapshotView[]): string {
  return renderTable(
    ['NAME', 'KIND', 'TEMPLATE', 'VM', 'MEMORY', 'STORED', 'CLONES', 'CREATED'],
    list.map((s) => [
      s.name,
      s.kind,
      s.template ? 'yes' : 'no',
      s.vm === '' ? '-' : s.vmm === '' ? s.vm : `${s.vm}@${s.vmm}`,
      formatBytes(snapshotMemory(s)),
      formatBytes(s.storedBytes),
      String(s.clones.length),
      s.createdAt ?? '-',
    ]),
  );
}

/** The fields of one snapshot: what it holds, where, what it costs, who runs from it. */
export function snapshotFields(s: SnapshotView): [string, string][] {
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
    ['parent', s.parent === '' ? '-' : s.parent],
    ['clones', s.clones.length === 0 ? 'none' : `${s.clones.length}: ${s.clones.join(', ')}`],
  ];
  for (const b of s.blocks) {
    fields.push([
      `block ${b.id}`,
      `0x${b.guestBase.toString(16)} ${formatBytes(b.size)}, region ${b.regionName} ` +
        `(${b.owned ? 'owned by the snapshot' : 'pinned: a region a user made'}), ` +
        `${formatBytes(b.storedBytes)} stored`,
    ]);
  }
  return fields;
}

/** `vmctl snapshot list|show|delete|export|import`: memstore's snapshots. */
export function registerSnapshot(program: Command, run: CommandRunner): void {
  const cmd = program
    .command('snapshot')
    .description(
      "memstore's snapshots: saved VMs (device state plus a sealed region per RAM block); " +
        'list, show, delete, export to a file, import from one',
    );

  cmd
    .command('list')
    .alias('ls')
    .description('list snapshots and templates with their kind, memory, stored bytes and clones')
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
      'show one snapshot: its blocks and their regions, sizes, the VMs that run from it, its parent',
    )
    .addHelpText('after', '\nExample:\n  vmctl snapshot show kv-20261125-221000 --output json')
    .action(
      run(async (ctx, ref: string) => {
        const s = await snapshots.get(ctx.clients, ref);
        ctx.print({ snapshot: snapshotJson(s) }, () => renderFields(snapshotFields(s)));
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
