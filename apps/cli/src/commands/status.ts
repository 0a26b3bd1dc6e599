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
  const hostOf = new Map(s.hosts.flatMap((h) => h.vmms.map((id) => [id, h.id] as const)));
  const vmms = renderTable(
    ['HOST', 'VMM', 'ADDRESS', 'HEALTH', 'VERSION', 'VMS', 'HEARTBEAT'],
    [...s.vmms]
      .sort((a, b) => (hostOf.get(a.id) ?? '').localeCompare(hostOf.get(b.id) ?? ''))
      .map((v) => [
        hostOf.get(v.id) ?? '-',
        v.id,
        v.address,
        v.health,
        v.version || '-',
        String(v.vms),
        v.alive ? 'alive' : 'late',
      ]),
  );
  const hosts =
    s.hosts.length === 0
      ? ''
      : renderTable(
          ['HOST', 'MEMSTORE', 'HEALTH', 'REGIONS', 'RESERVED', 'ALLOCATED', 'VOLATILE DIR'],
          s.hosts.flatMap((h) =>
            h.memstores.length === 0
              ? [[h.id, '(not named)', '-', '-', '-', '-', '-']]
              : h.memstores.map((m) => [
                  h.id,
                  m.address,
                  m.health,
                  m.usage === null ? '-' : String(m.usage.regions),
                  m.usage === null ? '-' : formatBytes(m.usage.totalSize),
                  m.usage === null ? '-' : formatBytes(m.usage.allocated),
                  m.usage?.volatileDir ?? '-',
                ]),
          ),
        ) + '\n';
  const m = s.memstore;
  const usage =
    m === null
      ? 'memstore usage: unavailable\n'
      : `memstore usage: ${m.regions} region(s), ${formatBytes(m.totalSize)} reserved, ` +
        `${formatBytes(m.allocated)} allocated (volatile: ${m.volatileDir}, persistent: ${m.persistentDir})\n`;
  const verdict = s.healthy ? 'cluster: healthy\n' : 'cluster: NOT healthy (see HEALTH)\n';
  return `${services}\n${hosts}${vmms}\n${usage}${verdict}`;
}

/**
 * `vmctl status`: health, version and address of every service, each host's memstore with its
 * usage, the vmm instances grouped by host, and the configured memstore's usage.
 */
export function registerStatus(program: Command, run: CommandRunner): void {
  program
    .command('status')
    .description(
      'cluster health: memstore, migrator, every host with its memstore, and every registered ' +
        'vmm instance by host',
    )
    .addHelpText(
      'after',
      "\nExit status: 0 when every service (each host's memstore too) is SERVING, 3 when one is not, 1 when the status cannot be read.",
    )
    .action(
      run(async (ctx) => {
        const s = await clusterStatus(ctx.clients);
        ctx.print(s, () => render(s));
        return s.healthy ? EXIT.ok : EXIT.unhealthy;
      }),
    );
}
