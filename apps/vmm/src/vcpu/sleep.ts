/**
 * How a pool thread sleeps: on its own wake word (the host bumps it and calls futexWake) and on
 * the switchover slot words of the VMs it hands over or takes over (the migration's other vCPU
 * thread, in another process, wakes those), in one `futex_waitv` — so that both its host and a
 * migration peer can end the sleep at once. On a kernel without `futex_waitv` (before Linux
 * 5.16) it sleeps on the wake word alone and looks at the slots every {@link SLOT_POLL_MS}.
 *
 * @packageDocumentation
 */
import {
  FUTEX_MAX_TIMEOUT_MS,
  FUTEX_WAIT_ANY_MAX,
  futexWait,
  futexWaitAny,
  isShmError,
} from '@handoff/shm';
import type { SlotWord } from '../switchover/thread.js';

/** Without `futex_waitv`: how often a thread with slots to watch looks at them. */
export const SLOT_POLL_MS = 1;

/**
 * Sleeps until any of `words` is woken (or no longer holds its expected value) or `timeoutMs`
 * passed; `words[0]` is the thread's wake word. Returns early, never late.
 */
export type Sleep = (words: readonly SlotWord[], timeoutMs: number) => void;

/** Whether futex_waitv works here (false after the first ENOSYS). */
let waitAny = true;

/** The {@link Sleep} of pool threads (module doc). `pollOnly` forces the fallback (tests). */
export function futexSleep(pollOnly = false): Sleep {
  return (words, timeoutMs) => {
    const timeout = Math.min(Math.max(0, timeoutMs), FUTEX_MAX_TIMEOUT_MS);
    const wake = words[0]!;
    if (words.length > 1 && waitAny && !pollOnly) {
      try {
        const all = words.length <= FUTEX_WAIT_ANY_MAX;
        futexWaitAny(
          all ? words : words.slice(0, FUTEX_WAIT_ANY_MAX),
          all ? timeout : Math.min(timeout, SLOT_POLL_MS),
        );
        return;
      } catch (err) {
        if (!isShmError(err) || err.code !== 'SHM_UNSUPPORTED') throw err;
        waitAny = false;
      }
    }
    const t = words.length > 1 ? Math.min(timeout, SLOT_POLL_MS) : timeout;
    futexWait(wake.buffer, wake.byteOffset, wake.expected, t);
  };
}
