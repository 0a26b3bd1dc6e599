import { describe, expect, it } from 'vitest';
import { futexSleep } from './sleep.js';

/** A word of its own SAB holding `value`, slept on as holding `expected`. */
function word(value: number, expected = value) {
  const buffer = new SharedArrayBuffer(8);
  Atomics.store(new Int32Array(buffer), 1, value);
  return { buffer, byteOffset: 4, expected };
}

describe('futexSleep', () => {
  it('watches the slot words beside the wake word: one that moved ends the sleep at once', () => {
    // Without the second word this would sleep for good (no timeout, nobody wakes it).
    const t0 = performance.now();
    futexSleep()([word(0), word(3, 2)], Infinity);
    expect(performance.now() - t0).toBeLessThan(5_000);
  });

  it('without futex_waitv, looks at the slot words every millisecond', () => {
    const t0 = performance.now();
    futexSleep(true)([word(0), word(3, 2)], Infinity);
    expect(performance.now() - t0).toBeLessThan(5_000);
  });

  it('sleeps on the wake word alone until its timeout', () => {
    const t0 = performance.now();
    futexSleep()([word(0)], 5);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(4);
  });
});
