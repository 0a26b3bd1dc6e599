/**
 * The host a vmm instance runs on (`--host-id`): the vmm instances of one host share one
 * memstore and map its files; instances on different hosts never share a file. The id goes
 * with every registration, beside the memstore's address, so the migrator can tell whether two
 * instances can hand RAM over by reference.
 *
 * @packageDocumentation
 */
import { ServiceError } from '@handoff/service';

/** The host id when none is given: a single-host cluster. */
export const DEFAULT_HOST_ID = 'host-1';

/** What a host id may be: the same form as a vmm id (lower-case letters, digits, dashes). */
export const HOST_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

/**
 * `--host-id` (or HANDOFF_VMM_HOST_ID), checked.
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` for an id that is not 1-63 lower-case letters,
 *   digits and dashes, starting with a letter or digit
 */
export function hostIdOf(config: { readonly 'host-id': string }): string {
  const id = config['host-id'];
  if (!HOST_ID_PATTERN.test(id)) {
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `--host-id "${id}" is not a host id: use 1-63 lower-case letters, digits and dashes, ` +
        `starting with a letter or digit (e.g. ${DEFAULT_HOST_ID})`,
    );
  }
  return id;
}
