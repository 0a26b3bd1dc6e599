/**
 * What this vmm's migrations do not implement yet. A capability or parameter the user turned on
 * is refused with `MIGRATION_UNSUPPORTED` and a message, never accepted and ignored.
 *
 * @packageDocumentation
 */
import type { MigrationCapabilities } from '@handoff/qapi';
import { MigrationError } from '../model/migration-error.js';

/** Capabilities this vmm cannot honour when on, and what to do instead. */
const UNSUPPORTED_ON: Readonly<Partial<Record<keyof MigrationCapabilities, string>>> = {
  events:
    'this vmm emits no migration events; follow the job with `vmctl jobs watch` (the ' +
    'migrator streams its progress) instead',
  'pause-before-switchover': 'this vmm does not implement it yet; migrate without it',
};

/**
 * Refuses what this vmm would otherwise silently ignore: an unimplemented capability turned on,
 * or return-path turned off (every stream here carries the target's answers).
 *
 * @throws MigrationError `MIGRATION_UNSUPPORTED`, naming each
 */
export function refuseUnsupported(caps: MigrationCapabilities): void {
  const why = unsupportedOn(caps);
  if (!caps['return-path']) {
    why.push(
      "return-path: every migration stream of this vmm carries the target's answers; leave it on",
    );
  }
  refuse(why);
}

/**
 * Post-copy here means a shared block filled on another host through its memstore; RAM that
 * would be copied (private blocks, or shared ones without bypass) still goes by pre-copy, so
 * post-copy with such a block is refused rather than silently pre-copied.
 *
 * @throws MigrationError `MIGRATION_UNSUPPORTED`
 */
export function refusePostcopyOfCopiedRam(
  caps: MigrationCapabilities,
  blocks: readonly { readonly id: string; readonly mode: string }[],
): void {
  if (!caps['postcopy-ram']) return;
  const copied = blocks.filter((b) => b.mode !== 'ref').map((b) => b.id);
  if (copied.length === 0) return;
  refuse([
    `postcopy-ram: block(s) ${copied.join(', ')} would be copied (private RAM, or shared RAM ` +
      'without bypass-shared-memory), and post-copy of copied RAM between vmm instances is not ' +
      'built yet; migrate without --postcopy (pre-copy with auto-converge), or give the VM ' +
      'shared RAM (--shared) and keep bypass on',
  ]);
}

/**
 * A target's early check (PrepareIncoming), before it reserves anything: refuses capabilities
 * turned on that this vmm does not implement. (What is off is not checked: a target is told
 * only the capabilities the coordinator chose to pass.)
 *
 * @throws MigrationError `MIGRATION_UNSUPPORTED`
 */
export function refuseUnsupportedCapabilities(caps: MigrationCapabilities): void {
  refuse(unsupportedOn(caps));
}

function unsupportedOn(caps: MigrationCapabilities): string[] {
  const why: string[] = [];
  for (const [name, what] of Object.entries(UNSUPPORTED_ON)) {
    if (caps[name as keyof MigrationCapabilities]) why.push(`${name}: ${what}`);
  }
  return why;
}

function refuse(why: readonly string[]): void {
  if (why.length > 0) {
    throw new MigrationError('MIGRATION_UNSUPPORTED', `cannot migrate as asked: ${why.join('; ')}`);
  }
}
