/**
 * Which host owns a VM, and the fencing epoch of that ownership across hosts. One small
 * interface with interchangeable backends: {@link LocalHostOwnership} (a file in the migrator's
 * state folder) for a cluster whose migrator is the one writer; an etcd backend goes behind the
 * same interface for real multi-host clusters (`claim` is then a transaction comparing the
 * key's value, `release` the same). No backend implements consensus of its own.
 *
 * @packageDocumentation
 */

/** A VM's ownership: the host that owns it (null: none) and the epoch of that fact. */
export interface VmOwnership {
  readonly vm: string;
  /** The owning host's id; null for a VM never claimed or released. */
  readonly host: string | null;
  /**
   * Grows by one with every claim and release, never reused (0: never claimed). A host
   * acting for the VM carries the epoch its claim returned; an older one is stale (fenced).
   */
  readonly epoch: number;
}

/**
 * Which host owns each VM. Every change is a compare-and-set on the epoch, so two hosts (or
 * two migrators) racing for a VM cannot both win, and a host holding an older epoch learns
 * that it lost the VM.
 */
export interface HostOwnership {
  /** The VM's owner and epoch now (`{ host: null, epoch: 0 }` for a VM never claimed). */
  owner(vm: string): Promise<VmOwnership>;
  /**
   * Makes `host` the owner of `vm` if its epoch is still `expectedEpoch` (what `owner` or the
   * last claim returned; 0 for a VM never claimed); returns the new ownership, epoch + 1.
   * Durable when it resolves.
   *
   * @throws MigratorError `MIGRATOR_OWNERSHIP_CONFLICT` (ABORTED) when the epoch moved on: read
   *   `owner` again and decide anew; `MIGRATOR_INVALID_ARGUMENT` for a bad name, host or epoch
   */
  claim(vm: string, host: string, expectedEpoch: number): Promise<VmOwnership>;
  /**
   * Ends `host`'s ownership of `vm` at `epoch` (the VM was destroyed, or no host should own it);
   * returns the ownership after it (no host, epoch + 1).
   *
   * @throws MigratorError `MIGRATOR_OWNERSHIP_CONFLICT` when `host` does not own the VM at
   *   `epoch`
   */
  release(vm: string, host: string, epoch: number): Promise<VmOwnership>;
}
