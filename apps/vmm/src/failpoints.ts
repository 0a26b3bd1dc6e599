/**
 * Fault points for the migration fault tests. With the environment variable
 * `HANDOFF_VMM_FAILPOINT=<name>[:kill]`, the vmm fails the operation in progress the first time
 * it passes the named point (an Error thrown there), or with `:kill` kills itself with SIGKILL
 * there, exactly as a kill -9 at that instant would. Unset (always, outside tests), a failpoint
 * is one comparison.
 *
 * Points:
 * - `incoming-after-lease`: a migration target took the leases of the shared blocks (at the
 *   final marker, or its vCPU thread flipped them in a switchover) and has not run the VM yet.
 * - `switchover-before-lease`: in a switchover with armed transfers, the target's vCPU thread
 *   restored the source's state (the source is stopped, waiting) and has not flipped the lease.
 * - `outgoing-before-stop`: a source reached stop-and-copy and has not asked its vCPU to stop
 *   (nothing can have moved yet).
 * - `migrate-vm-before-final`: a source's migration ended and MigrateVm has not sent its last
 *   message (with `:kill`: the stream to the migrator drops after the hand-off).
 * - `source-retake-unknown`: a source that failed after its stop gets no answer from memstore
 *   at its first re-take of its lease (as if memstore were down); {@link failpointHit}.
 */
export type FailpointName =
  | 'incoming-after-lease'
  | 'switchover-before-lease'
  | 'outgoing-before-stop'
  | 'migrate-vm-before-final'
  | 'source-retake-unknown';

/** Name of the variable that arms a failpoint. */
export const FAILPOINT_VARIABLE = 'HANDOFF_VMM_FAILPOINT';

const armed = ((): { name: string; kill: boolean } | undefined => {
  const spec = process.env[FAILPOINT_VARIABLE];
  if (spec === undefined || spec === '') return undefined;
  const [name, action] = spec.split(':');
  return { name: name!, kill: action === 'kill' };
})();

/** Scopes a failpoint already fired in (see {@link failpoint}). */
const firedIn = new WeakSet<object>();

/**
 * Fails (throws) or dies (SIGKILL) here if this failpoint is armed; it fires once — once per
 * `scope` object when one is given: a vCPU thread runs many VMs and passes the VM's machine, so
 * that the point fires at each VM's first pass, as it did when every VM had a thread of its own.
 *
 * @throws Error naming the failpoint
 */
export function failpoint(name: FailpointName, scope?: object): void {
  if (armed === undefined || armed.name !== name) return;
  if (scope !== undefined) {
    if (firedIn.has(scope)) return;
    firedIn.add(scope);
  } else {
    armed.name = '';
  }
  if (armed.kill) process.kill(process.pid, 'SIGKILL');
  throw new Error(`failpoint ${name} (${FAILPOINT_VARIABLE}) fired`);
}

/**
 * True the first time this armed failpoint is passed (it then fires no more): the caller acts
 * as if the failure happened. With `:kill` it dies instead, as {@link failpoint} does.
 */
export function failpointHit(name: FailpointName): boolean {
  if (armed === undefined || armed.name !== name) return false;
  armed.name = '';
  if (armed.kill) process.kill(process.pid, 'SIGKILL');
  return true;
}
