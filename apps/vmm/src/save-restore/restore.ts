/**
 * Starting VMs from a snapshot (RestoreVm, CloneVms): the snapshot is read, checked and decoded
 * once ({@link prepareSnapshot}); each VM then maps every block's sealed region copy-on-write
 * (attached as a clone, which pins the snapshot), gets the device state with a new identity
 * (generation id and entropy of its own) and runs, its guest clock going on from the saved
 * time ({@link startFromSnapshot}).
 *
 * @packageDocumentation
 */
import { ControlDevice, type ControlIdentity } from '../devices/control.js';
import type { MachineState } from '../machine/state.js';
import type { Snapshot } from '../model/snapshot.js';
import type { RamBlockSpec, VmSpec } from '../model/types.js';
import { VmmError } from '../model/vmm-error.js';
import { closeRamBlocks, getSnapshot, openClone, type RamBacking } from '../ram/index.js';
import { decodeDeviceState } from '../snapshot/index.js';
import type { VmHost } from '../vm/host.js';
import type { Vm } from '../vm/vm.js';
import { decodeSpecBytes } from '../wire/spec.js';
import type { StartedVm } from './types.js';

/** A snapshot read from memstore and checked: what every VM started from it shares. */
export interface PreparedSnapshot {
  readonly snapshot: Snapshot;
  /** The saved VM's spec (its name is the saved VM's). */
  readonly spec: VmSpec;
  /** The blocks as the started VMs map them: clone RAM of the snapshot's regions. */
  readonly ram: readonly RamBlockSpec[];
  readonly state: MachineState;
  /**
   * Per block, the identity each snapshot of the chain recorded for it, root first, this
   * snapshot's last (one element for a standalone snapshot): the regions a clone maps.
   */
  readonly chains: readonly (readonly string[])[];
}

/** Most snapshots in one chain a restore follows (a loop in memstore's answers ends here). */
const MAX_CHAIN = 64;

/**
 * Reads snapshot `ref` (a name or an id) with its device state and checks that it holds
 * together: memstore checked the device state's CRC; here its spec must decode, its blocks must
 * be the spec's blocks, and its device state must decode and validate. Nothing is mapped.
 *
 * @throws `SNAPSHOT_NOT_FOUND`, `SNAPSHOT_CORRUPT` (memstore's), VmmError
 *   `VMM_SNAPSHOT_INVALID` (also: a chain whose snapshots' blocks differ),
 *   `VMM_MEMSTORE_UNAVAILABLE`
 */
export async function prepareSnapshot(host: VmHost, ref: string): Promise<PreparedSnapshot> {
  if (ref === '') {
    throw new VmmError('VMM_INVALID_ARGUMENT', 'the request names no snapshot; set "snapshot"');
  }
  const { snapshot, deviceState } = await getSnapshot(host.ramContext('restore'), ref, true);
  const what = `snapshot ${snapshot.name}`;
  const invalid = (why: string, cause?: unknown): VmmError =>
    new VmmError(
      'VMM_SNAPSHOT_INVALID',
      `${what}: ${why}; it cannot be restored (delete it and save the VM again)`,
      cause === undefined ? undefined : { cause },
    );
  if (deviceState.length === 0 || deviceState.length !== snapshot.deviceStateBytes) {
    throw invalid(
      `its device state is ${deviceState.length} bytes, the snapshot records ` +
        `${snapshot.deviceStateBytes}`,
    );
  }
  const spec = decodeSpecBytes(snapshot.vmSpec, what);
  if (
    spec.ram.length !== snapshot.blocks.length ||
    spec.ram.some((b, k) => {
      const s = snapshot.blocks[k]!;
      return b.id !== s.id || b.guestBase !== s.guestBase || b.size !== s.size;
    })
  ) {
    throw invalid(
      `its blocks (${snapshot.blocks.map((b) => `${b.id}:${b.size}`).join(', ')}) are not its ` +
        `VM's (${spec.ram.map((b) => `${b.id}:${b.size}`).join(', ')})`,
    );
  }
  const ram = snapshot.blocks.map((b) => ({
    id: b.id,
    guestBase: b.guestBase,
    size: b.size,
    backend: 'clone' as const,
    region: b.regionName,
  }));
  let state: MachineState;
  try {
    state = decodeDeviceState(deviceState).state;
  } catch (err) {
    throw invalid(`its device state does not load (${(err as Error).message})`, err);
  }
  const chains = await chainIdentities(host, snapshot, invalid);
  return { snapshot, spec, ram, state, chains };
}

/**
 * A layered snapshot's ancestors, read once: every one must have the snapshot's blocks (ids,
 * bases, sizes). Returns, per block, the identities its chain recorded, root first.
 */
async function chainIdentities(
  host: VmHost,
  snapshot: Snapshot,
  invalid: (why: string) => VmmError,
): Promise<string[][]> {
  const chain: Snapshot[] = [snapshot];
  for (let s = snapshot; s.parent !== '';) {
    if (chain.length > MAX_CHAIN) {
      throw invalid(`its chain of parents is longer than ${MAX_CHAIN} snapshots`);
    }
    s = (await getSnapshot(host.ramContext('restore'), s.parent, false)).snapshot;
    const same =
      s.blocks.length === snapshot.blocks.length &&
      s.blocks.every((b, k) => {
        const own = snapshot.blocks[k]!;
        return b.id === own.id && b.guestBase === own.guestBase && b.size === own.size;
      });
    if (!same) throw invalid(`its blocks are not those of snapshot ${s.name}, which it layers on`);
    chain.unshift(s);
  }
  return snapshot.blocks.map((_, k) => chain.map((s) => s.blocks[k]!.identity));
}

/**
 * Starts VM `name` (reserved by the caller) from a prepared snapshot: maps the blocks, builds
 * the machine without loading an image, loads the state with a new identity, and runs it
 * unless `paused`. A failure leaves nothing: no VM, no mapping, no clone attachment.
 *
 * @throws VmmError `VMM_INVALID_SPEC`, `VMM_LIMIT_EXCEEDED` (the spec does not fit this vmm),
 *   `VMM_SNAPSHOT_INVALID` (a region was replaced or resized), `VMM_REGION_NOT_FOUND`,
 *   `VMM_VCPU_FAILED`; memstore's codes
 */
export async function startFromSnapshot(
  host: VmHost,
  prepared: PreparedSnapshot,
  name: string,
  paused: boolean,
): Promise<StartedVm> {
  const { snapshot } = prepared;
  const spec = host.checkIncomingSpec({ ...prepared.spec, name, ram: prepared.ram });
  const ctx = host.ramContext(name);
  const ram: RamBacking[] = [];
  try {
    for (const [k, b] of spec.ram.entries()) {
      const recorded = snapshot.blocks[k]!;
      ram.push(
        await openClone(b, ctx, {
          identity: recorded.identity,
          owner: `snapshot ${snapshot.name}`,
          chain: prepared.chains[k],
        }),
      );
    }
  } catch (err) {
    await closeRamBlocks(ram);
    throw err;
  }
  const identity = ControlDevice.randomIdentity();
  let vm: Vm;
  try {
    // The touched bitmap starts empty: what the clone has not written is the snapshot's.
    vm = host.spawnIncoming(spec, ram, true, identity);
  } catch (err) {
    await closeRamBlocks(ram);
    throw err;
  }
  try {
    await vm.spawned();
    vm.runsFrom(snapshot.name);
    const at = await host.adoptAndRun(vm, withIdentity(prepared.state, identity), !paused);
    vm.log.info(
      { snapshot: snapshot.name, generationId: identity.generationId.toString(16), paused },
      paused ? 'VM restored from a snapshot (paused)' : 'VM restored from a snapshot and runs',
    );
    return { vm: vm.info(), runningAtMs: at };
  } catch (err) {
    await vm.destroy().catch(() => undefined); // unmaps and detaches its blocks
    throw err;
  }
}

/**
 * The saved state with `identity` in place of the saved VM's: a restored VM or a clone never
 * shares a generation id or RNG seed with its snapshot's VM or another clone. Everything else —
 * the CPU, the clock (the guest's time goes on from the saved mtime), the devices — is kept.
 */
export function withIdentity(state: MachineState, identity: ControlIdentity): MachineState {
  return {
    ...state,
    control: {
      ...state.control,
      generationId: identity.generationId.toString(16).padStart(16, '0'),
      entropy: Array.from(identity.entropy),
    },
  };
}
