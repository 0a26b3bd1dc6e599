import type { MachineState } from '../machine/state.js';
import type { SaveRegion } from '../ram/index.js';
import type { Vm } from '../vm/vm.js';

/**
 * Pauses `vm` (a paused VM stays paused) and takes its device state at that instruction
 * boundary, in one round trip to its vCPU. Returns the state and the epoch milliseconds at which
 * the vCPU stopped.
 *
 * @throws VmmError `VMM_INVALID_STATE`, `VMM_VCPU_FAILED`
 */
export async function pauseForSave(
  vm: Vm,
): Promise<{ readonly state: MachineState; readonly pausedAtMs: number }> {
  const stopped = await vm.pauseAndSave();
  if (stopped.published) throw new Error('internal: a save published into a switchover slot');
  return stopped;
}

/**
 * Resumes the guest once a save's pages are copied into `regions` (a full or a layer save),
 * before they are synced and recorded; a failed resume discards the regions.
 */
export async function resumeAfterCopy(
  vm: Vm,
  regions: readonly SaveRegion[],
): ReturnType<Vm['resume']> {
  try {
    return await vm.resume();
  } catch (err) {
    await Promise.all(regions.map((r) => r.discard()));
    throw err;
  }
}
