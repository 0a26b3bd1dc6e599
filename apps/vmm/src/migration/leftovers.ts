/**
 * Files a killed vmm process leaves behind: the switchover slots it created as a migration target
 * (a live vmm deletes each one when its migration ends) and the unix socket of its data channel.
 * A vmm started with the same instance id removes its predecessors' ones before it serves.
 *
 * @packageDocumentation
 */
import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '@handoff/service';
import { dataChannelAlive } from './transport/data-channel.js';
import { isSlotName, slotPrefixOf } from '../switchover/slot.js';

/** Where a vmm instance looks for what its predecessors left. */
export interface LeftoverPlaces {
  readonly vmmId: string;
  /** The `--switchover-dir` folder, or null for none. */
  readonly switchoverDir: string | null;
  /**
   * The folder of `--data-channel auto` sockets (`handoff-<id>-<pid>.sock`), or null when the
   * data channel has another address.
   */
  readonly socketDir: string | null;
}

/** What {@link sweepLeftovers} removed. */
export interface SweptLeftovers {
  readonly slots: readonly string[];
  readonly sockets: readonly string[];
}

/**
 * Removes the slot files this instance id's earlier processes created, and their data-channel
 * sockets that nothing listens on any more (a socket that still answers, or cannot be told
 * within a second, stays). Files that cannot be listed or removed are left alone: this is
 * tidying, never a reason not to start.
 */
export async function sweepLeftovers(at: LeftoverPlaces, log: Logger): Promise<SweptLeftovers> {
  const slots: string[] = [];
  const sockets: string[] = [];
  if (at.switchoverDir !== null) {
    // Slots of this build, and of builds that named them hand-off slots.
    const prefixes = [slotPrefixOf(at.vmmId), slotPrefixOf(at.vmmId, true)];
    for (const name of list(at.switchoverDir)) {
      const ours = isSlotName(name) && prefixes.some((p) => name.startsWith(p));
      if (ours && remove(join(at.switchoverDir, name))) slots.push(name);
    }
  }
  if (at.socketDir !== null) {
    const own = `handoff-${at.vmmId}-${process.pid}.sock`;
    for (const name of list(at.socketDir)) {
      if (name === own || !isSocketName(name, at.vmmId)) continue;
      const path = join(at.socketDir, name);
      if (!(await dataChannelAlive(`unix:${path}`)) && remove(path)) sockets.push(name);
    }
  }
  if (slots.length + sockets.length > 0) {
    log.info(
      { slots, sockets },
      'removed switchover slots and data-channel sockets that earlier processes of this vmm left',
    );
  }
  return { slots, sockets };
}

/** `handoff-<vmmId>-<pid>.sock`: a data-channel socket of `vmmId` (any process). */
function isSocketName(name: string, vmmId: string): boolean {
  const head = `handoff-${vmmId}-`;
  return name.startsWith(head) && /^\d+\.sock$/.test(name.slice(head.length));
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function remove(path: string): boolean {
  try {
    unlinkSync(path);
    return true;
  } catch {
    return false;
  }
}
