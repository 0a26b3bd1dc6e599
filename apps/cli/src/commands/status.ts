import type { Command } from 'commander';
import { clusterStatus, type ClusterStatus } from '../api/status.js';
import { EXIT } from '../errors.js';
import { formatBytes } from '../output/units.js';
import { renderTable } from '../output/render.js';
import type { CommandRunner } from './runner.js';

function render(s: ClusterStatus): string {
  const services = renderTable(
    ['SERVICE', 'ADDRESS', 'HEALTH', 'VERSION'],
    s.services.map((x) => [x.name, x.address, x.health, x.version || '-']),
  );
  const vmms = renderTable(
    ['VMM', 'ADDRESS', 'HEALTH', 'VERSION', 'VMS', 'HEARTBEAT'],
    s.vmms.map((v) => [
      v.id,
      v.address,
      v.health,
      v.version || '-',
      String(v.vms),
      v.alive ? 'alive' : 'late',
    ]),
  );
  const m = s.memstore;
  const usage =
    m === null
      ? 'memstore usage: unavailable\n'
      : `memstore usage: ${m.regions} region(s), ${formatBytes(m.totalSize)} reserved, ` +
        `${formatBytes(m.allocated)} allocated (volatile: ${m.volatileDir}, persistent: ${m.persistentDir})\n`;
  const verdict = s.healthy ? 'cluster: healthy\n' : 'cluster: NOT healthy (see HEALTH)\n';
  return `${services}\n${vmms}\n${usage}${verdict}`;
}

/** `vmctl status`: health, version and address of every service, vmm instances, memstore usage. */
export function registerStatus(program: Command, run: CommandRunner): void {
  program
    .command('status')
    .description('cluster health: memstore, migrator and every registered vmm instance')
    .addHelpText(
      'after',
      '\nExit status: 0 when every service is SERVING, 3 when one is not, 1 when the status cannot be read.',
    )
    .action(
      run(async (ctx) => {
        const s = await clusterStatus(ctx.clients);
        ctx.print(s, () => render(s));
        return s.healthy ? EXIT.ok : EXIT.unhealthy;
      }),
    );
}
