/**
 * The source's main thread in a switchover: it opens the slot the target offered, checks that
 * it was prepared for this very VM, and learns the target's outcome from the slot (README.md
 * beside this file).
 *
 * @packageDocumentation
 */
import type { Logger } from '@handoff/service';
import { MigrationError } from '../model/migration-error.js';
import { SlotState, SwitchoverSlot, type SlotExpectation } from './slot.js';
import type { SwitchoverBlock } from './offer.js';

/** How often a source waiting on a slot alone looks whether the target still lives. */
const PROBE_EVERY_MS = 100;

/** The VM a source hands over, as a slot's expectation describes it. */
export interface OwnVm {
  /** Its lease holder (`vmm-id/vm-name`). */
  readonly holder: string;
  /** Its blocks in table order; null for a block that does not travel by reference. */
  readonly blocks: readonly (SwitchoverBlock | null)[];
}

/**
 * Maps a slot the target offered (with its answer to the stream's header); null, with a warning,
 * when it cannot be used — the device state then goes on the stream.
 */
export function openOfferedSlot(path: string, log: Logger): SwitchoverSlot | null {
  try {
    return SwitchoverSlot.open(path);
  } catch (err) {
    log.warn(
      { error: (err as Error).message },
      "cannot use the target's switchover slot: the device state goes on the stream",
    );
    return null;
  }
}

/**
 * Maps the slot PrepareIncoming prepared, if it is armed and was prepared for this very VM:
 * the same lease holder and, block by block, the same region, identity, epoch, size and base.
 * Null otherwise, with a warning saying why (the migration then uses the stream).
 */
export function openPreparedSlot(
  path: string,
  own: OwnVm,
  log: Logger,
): { readonly slot: SwitchoverSlot; readonly expectation: SlotExpectation } | null {
  const slot = openOfferedSlot(path, log);
  if (slot === null) return null;
  let why: string | null;
  let expectation: SlotExpectation | null = null;
  try {
    if (slot.state() !== SlotState.ARMED) why = 'not armed';
    else why = unlike((expectation = slot.expectation()), own);
  } catch (err) {
    why = (err as Error).message;
  }
  if (why === null) return { slot, expectation: expectation! };
  slot.close();
  log.warn(
    { why },
    "the target's switchover slot does not fit this VM: the migration uses the stream",
  );
  return null;
}

/** How a slot's expectation differs from `own`, or null when it describes it. */
function unlike(e: SlotExpectation | null, own: OwnVm): string | null {
  if (e === null) return 'it names no VM';
  if (e.from !== own.holder) return `it was prepared for ${e.from}, not ${own.holder}`;
  if (e.blocks.length !== own.blocks.length) return `it lists ${e.blocks.length} blocks`;
  for (const [k, b] of own.blocks.entries()) {
    const x = e.blocks[k]!;
    const same =
      b !== null &&
      x.id === b.id &&
      x.regionId === b.regionId &&
      x.identity === b.identity &&
      x.epoch === b.epoch &&
      x.size === b.size &&
      x.guestBase === b.guestBase;
    if (!same) return `block ${b?.id ?? k}: another region, identity, epoch or size`;
  }
  return null;
}

/**
 * The slot's outcome when no stream carries the target's answer: RUNNING or HELD (the lease
 * moved; the VM is the target's). Usually there at once: the source's vCPU thread waited for it.
 * With no stream to break, `targetAlive` is asked every {@link PROBE_EVERY_MS}.
 *
 * @throws MigrationError `MIGRATION_TARGET_FAILED` when the target's thread failed, is gone, or
 *   did not end its take-over within `timeoutMs`
 */
export async function awaitTakeOver(
  slot: SwitchoverSlot,
  opts: { timeoutMs: number; targetAlive: () => Promise<boolean>; target: string; vm: string },
): Promise<number> {
  const deadline = performance.now() + opts.timeoutMs;
  let probedAt = performance.now();
  const failed = (why: string): never => {
    throw new MigrationError(
      'MIGRATION_TARGET_FAILED',
      `the target at ${opts.target} ${why} VM ${opts.vm} through the switchover slot`,
    );
  };
  for (;;) {
    const s = slot.state();
    if (s === SlotState.RUNNING || s === SlotState.HELD) return s;
    if (s === SlotState.FAILED) failed('could not take over (its log says why)');
    if (performance.now() >= deadline) {
      failed(`did not end within ${opts.timeoutMs} ms its take-over of`);
    }
    if (performance.now() - probedAt >= PROBE_EVERY_MS) {
      const alive = await opts.targetAlive();
      probedAt = performance.now();
      const after = slot.state();
      if (after === SlotState.RUNNING || after === SlotState.HELD) return after;
      if (!alive) failed('is gone (its data channel refuses connections) amid its take-over of');
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}
