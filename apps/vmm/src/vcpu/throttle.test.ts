import { describe, expect, it } from 'vitest';
import { CONTROL_BYTES, Ctl } from './protocol.js';
import { holdAfterSlice, MAX_THROTTLE, SliceThrottle } from './throttle.js';

describe('holdAfterSlice', () => {
  it('splits each period as run : held = (1 - share) : share', () => {
    expect(holdAfterSlice(1, 0)).toBe(0);
    expect(holdAfterSlice(1, 5000)).toBeCloseTo(1);
    expect(holdAfterSlice(1, 2000)).toBeCloseTo(0.25);
    expect(holdAfterSlice(0.5, 9900)).toBeCloseTo(49.5);
    expect(holdAfterSlice(1, MAX_THROTTLE)).toBeCloseTo(9999);
  });

  it('never holds forever nor backwards', () => {
    expect(holdAfterSlice(1, 20_000)).toBeCloseTo(9999); // capped at MAX_THROTTLE
    expect(holdAfterSlice(1, -5)).toBe(0);
    expect(holdAfterSlice(0, 5000)).toBe(0);
    expect(holdAfterSlice(Number.NaN, 5000)).toBe(0);
  });
});

describe('SliceThrottle', () => {
  it('holds after a charged slice, and lets go at once when the share drops to 0', () => {
    const control = new SharedArrayBuffer(CONTROL_BYTES);
    const word = new Int32Array(control);
    const th = new SliceThrottle(control);
    th.charge(100, 101);
    expect(th.heldUntil(101)).toBe(101); // unthrottled: runs now
    Atomics.store(word, Ctl.THROTTLE, 7500);
    th.charge(100, 101);
    expect(th.heldUntil(101)).toBeCloseTo(104);
    expect(th.heldUntil(105)).toBe(105);
    th.charge(105, 106);
    Atomics.store(word, Ctl.THROTTLE, 0);
    expect(th.heldUntil(106.5)).toBe(106.5);
  });
});
