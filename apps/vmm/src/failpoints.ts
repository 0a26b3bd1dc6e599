/**
 * Fault points for the migration fault tests. With the environment variable
 * `HANDOFF_VMM_FAILPOINT=<name>[:kill|:stop]`, the vmm fails the operation in progress the first
 * time it passes the named point (an Error thrown there), or with `:kill` kills itself with
 * SIGKILL there, exactly as a kill -9 at that instant would; `:stop` is for points that say
 * they honour it (the process stops itself with SIGSTOP). Unset (always, outside tests), a
 * failpoint is one comparison.
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
 * - `data-channel-mid-frame`: a source's data channel sends the first half of its first page
 *   frame and, once those bytes left the process, stops there (`:stop`: SIGSTOP, as a source
 *   frozen mid-frame; otherwise it withholds the rest of that frame); {@link failpointAction}.
 */
export type FailpointName =
  | 'incoming-after-lease'
  | 'switchover-before-lease'
  | 'outgoing-before-stop'
  | 'migrate-vm-before-final'
  | 'source-retake-unknown'
  | 'data-channel-mid-frame';

/** Name of the variable that arms a failpoint. */
export const FAILPOINT_VARIABLE = 'HANDOFF_VMM_FAILPOINT';

const armed = ((): { name: string; kill: boolean; stop: boolean } | undefined => {
  const spec = process.env[FAILPOINT_VARIABLE];
  if (spec === undefined || spec === '') return undefined;
  const [name, action] = spec.split(':');
  return { name: name!, kill: action === 'kill', stop: action === 'stop' };
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

/**
 * For points whose caller carries out the fault itself: `undefined` unless this armed failpoint
 * is passed for the first time (it then fires no more); else `'stop'` when armed with `:stop`,
 * `'fail'` otherwise. With `:kill` it dies instead, as {@link failpoint} does.
 */
export function failpointAction(name: FailpointName): 'stop' | 'fail' | undefined {
  if (armed === undefined || armed.name !== name) return undefined;
  armed.name = '';
  if (armed.kill) process.kill(process.pid, 'SIGKILL');
  return armed.stop ? 'stop' : 'fail';
}
