/**
 * Crash points for the crash-safety tests. With the environment variable
 * `HANDOFF_MEMSTORE_FAILPOINT=<name>[:<n>]`, the process kills itself with
 * SIGKILL the n-th time (default: the first) it passes the named point —
 * exactly what a kill -9 or power cut at that instant does. Unset (always,
 * outside tests), a failpoint is one comparison.
 *
 * Points, in the order of the operations they interrupt:
 * - `create-after-row`: the 'creating' row is committed, the file not yet made;
 * - `create-after-file`: the file exists, the row is still 'creating';
 * - `delete-after-row`: the row is deleted, the file not yet removed;
 * - `seal-after-chmod`: the file is read-only, the 'sealed' state not committed;
 * - `lease-after-commit`: an AcquireLease, TransferLease or ReleaseLease is
 *   committed, its reply not yet sent (the caller sees the call fail);
 * - `snapshot-after-state-file`: a CreateSnapshot's device-state file is written, nothing in
 *   the catalog yet;
 * - `snapshot-before-commit`: inside CreateSnapshot's transaction, its regions' files made
 *   read-only, the rows not committed;
 * - `snapshot-delete-after-row`: a DeleteSnapshot's rows are deleted, its files not yet;
 * - `import-after-regions`: an ImportSnapshot's regions are created and filled, the snapshot
 *   not recorded;
 * - `flatten-after-regions`: a FlattenSnapshot's regions are created, filled and flushed and its
 *   device-state file written, nothing committed;
 * - `flatten-before-commit`: inside FlattenSnapshot's transaction, its regions marked active and
 *   their files made read-only, nothing committed.
 */
export type FailpointName =
  | 'create-after-row'
  | 'create-after-file'
  | 'delete-after-row'
  | 'seal-after-chmod'
  | 'lease-after-commit'
  | 'snapshot-after-state-file'
  | 'snapshot-before-commit'
  | 'snapshot-delete-after-row'
  | 'import-after-regions'
  | 'flatten-after-regions'
  | 'flatten-before-commit';

/** Name of the variable that arms a failpoint. */
export const FAILPOINT_VARIABLE = 'HANDOFF_MEMSTORE_FAILPOINT';

const armed = ((): { name: string; remaining: number } | undefined => {
  const spec = process.env[FAILPOINT_VARIABLE];
  if (spec === undefined || spec === '') return undefined;
  const [name, count] = spec.split(':');
  return { name: name!, remaining: Math.max(1, Number(count ?? '1') || 1) };
})();

/** Dies here (SIGKILL) if this failpoint is armed and its count is reached. */
export function failpoint(name: FailpointName): void {
  if (armed === undefined || armed.name !== name) return;
  if (--armed.remaining > 0) return;
  process.kill(process.pid, 'SIGKILL');
}

/**
 * Tests only: `HANDOFF_MEMSTORE_PAGE_DELAY_MS=<n>` makes the page channel wait n ms after each
 * answer it sends on a connection, so a lazy fill lasts long enough to be interrupted. Unset: 0.
 */
export const PAGE_DELAY_VARIABLE = 'HANDOFF_MEMSTORE_PAGE_DELAY_MS';

/** The page channel's delay per answer, ms (0 outside tests). */
export const pageServeDelayMs = Math.max(0, Number(process.env[PAGE_DELAY_VARIABLE] ?? '0') || 0);
