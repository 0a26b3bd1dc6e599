/**
 * The command line of `npm run pki`: which folder, which identities, which extra names.
 *
 * @packageDocumentation
 */
import { parseArgs } from 'node:util';
import { ROLES, type PeerIdentity, type Role } from '@handoff/service';
import { CLUSTER_IDENTITIES, SECOND_HOST_IDENTITIES } from '@handoff/service/pki';

/** What `npm run pki` is asked to make. */
export interface PkiRequest {
  readonly dir: string;
  readonly identities: readonly PeerIdentity[];
  /** Extra SANs (host names or addresses) of every certificate issued now. */
  readonly names: readonly string[];
}

/** The help text of `npm run pki`. */
export const PKI_USAGE = `Usage: npm run pki -- --dir <dir> [--id <id>:<role> ...] [--hosts 1|2] [--name <host> ...]

Creates (or completes) a Handoff PKI in <dir>: a CA (ca.pem, ca.key) and a certificate and key
per identity (<id>.pem, <id>.key; CN = id, OU = role), ECDSA P-256, SANs 127.0.0.1, ::1,
localhost and every --name. Without --id: the local cluster's memstore, migrator, vmm-a, vmm-b
and operator, and with --hosts 2 also the second host's memstore-2 and vmm-c. Certificates
already there and valid are kept (delete one to issue it again, e.g. with other names).
Roles: ${ROLES.join(', ')}.
`;

/** Thrown for a command line it cannot use; the message says what is wrong. */
export class PkiUsageError extends Error {
  override readonly name = 'PkiUsageError';
}

/** Parses `npm run pki`'s arguments. @throws PkiUsageError */
export function parsePkiArgs(argv: readonly string[]): PkiRequest | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        dir: { type: 'string' },
        id: { type: 'string', multiple: true },
        name: { type: 'string', multiple: true },
        hosts: { type: 'string' },
        help: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (err) {
    throw new PkiUsageError((err as Error).message);
  }
  if (values.help === true) return 'help';
  if (values.dir === undefined || values.dir === '') {
    throw new PkiUsageError('--dir is missing: name the folder of the PKI');
  }
  const identities = (values.id ?? []).map((spec): PeerIdentity => {
    const [id, role] = spec.split(':');
    if (id === undefined || id === '' || !(ROLES as readonly string[]).includes(role ?? '')) {
      throw new PkiUsageError(`--id ${spec} is not <id>:<role> with a role of ${ROLES.join(', ')}`);
    }
    return { id, role: role as Role };
  });
  const hosts = values.hosts ?? '1';
  if (hosts !== '1' && hosts !== '2') {
    throw new PkiUsageError(`--hosts ${hosts}: the local cluster has 1 or 2 hosts`);
  }
  if (values.hosts !== undefined && identities.length > 0) {
    throw new PkiUsageError('--hosts names the identities of the local cluster: leave out --id');
  }
  const cluster =
    hosts === '2' ? [...CLUSTER_IDENTITIES, ...SECOND_HOST_IDENTITIES] : CLUSTER_IDENTITIES;
  return {
    dir: values.dir,
    identities: identities.length > 0 ? identities : cluster,
    names: values.name ?? [],
  };
}
