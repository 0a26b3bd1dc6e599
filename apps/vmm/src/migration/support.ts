/**
 * What this vmm's migrations do not implement yet. A capability or parameter the user turned on
 * is refused with `MIGRATION_UNSUPPORTED` and a message, never accepted and ignored.
 *
 * @packageDocumentation
 */
import type { MigrationCapabilities, MigrationParameterName } from '@handoff/qapi';
import { MigrationError } from '../model/migration-error.js';

/** Capabilities this vmm cannot honour when on, and what to do instead. */
const UNSUPPORTED_ON: Readonly<Partial<Record<keyof MigrationCapabilities, string>>> = {
  'postcopy-ram': 'this vmm does not implement post-copy yet; migrate without it',
  events:
    'this vmm emits no migration events; follow the job with `vmctl jobs watch` (the ' +
    'migrator streams its progress) instead',
  'pause-before-switchover': 'this vmm does not implement it yet; migrate without it',
};

/** Parameters that only matter with a capability this vmm does not implement. */
const NEEDS: Readonly<Partial<Record<MigrationParameterName, keyof MigrationCapabilities>>> = {
  'max-postcopy-bandwidth': 'postcopy-ram',
};

/**
 * Refuses what this vmm would otherwise silently ignore: an unimplemented capability turned on,
 * return-path turned off (every stream here carries the target's answers), or a parameter `set`
 * by the user that only an unimplemented capability reads.
 *
 * @throws MigrationError `MIGRATION_UNSUPPORTED`, naming each
 */
export function refuseUnsupported(
  caps: MigrationCapabilities,
  set: readonly MigrationParameterName[],
): void {
  const why = unsupportedOn(caps);
  if (!caps['return-path']) {
    why.push(
      "return-path: every migration stream of this vmm carries the target's answers; leave it on",
    );
  }
  for (const name of set) {
    const cap = NEEDS[name];
    if (cap !== undefined) {
      why.push(
        `${name}: it only takes effect with ${cap}, which this vmm does not implement yet; ` +
          'leave it unset',
      );
    }
  }
  refuse(why);
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
