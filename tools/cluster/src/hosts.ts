/**
 * How many hosts `npm start` runs on this machine, and where the second one's services sit.
 * A host is one memstore with its own folders plus the vmm instances that use it.
 *
 * @packageDocumentation
 */

/** The most hosts the local cluster runs. */
export const MAX_HOSTS = 2;

/** The second host: memstore-2 and vmm-c, at these offsets from `--base-port`. */
export const SECOND_HOST = {
  id: 'host-2',
  memstore: 'memstore-2',
  memstoreOffset: 300,
  vmm: 'vmm-c',
  vmmOffset: 401,
} as const;

/** What `--hosts` takes, for its error message. */
export const HOSTS_USAGE =
  '--hosts 1 runs host-1 (memstore, vmm-a, vmm-b); --hosts 2 adds host-2 (memstore-2, vmm-c).';

/**
 * `--hosts`: 1 when absent; an Error saying what is supported for anything but 1 or 2 (more
 * hosts need more identities and ports than the local cluster names).
 */
export function parseHostCount(text: string | undefined): 1 | 2 | Error {
  if (text === undefined || text === '1') return 1;
  if (text === '2') return 2;
  return new Error(
    `--hosts ${text} is not supported: the local cluster runs 1 or ${MAX_HOSTS} hosts on one ` +
      'machine',
  );
}
