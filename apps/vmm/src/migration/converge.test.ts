import { describe, expect, it } from 'vitest';
import { MAX_THROTTLE_UNITS, nextThrottle, throttlePercent, type PassMeasure } from './converge.js';

const MiB = 1024 * 1024;
const qemu = { initialPercent: 20, incrementPercent: 10 };
/** A pass that sent `sent` MiB and saw `dirtied` MiB dirtied, of 256 MiB tracked. */
const pass = (sent: number, dirtied: number): PassMeasure => ({
  sentBytes: sent * MiB,
  dirtiedBytes: dirtied * MiB,
  ms: 100,
  trackedBytes: 256 * MiB,
});

describe('nextThrottle', () => {
  it('leaves a guest that dirties at most half of what a pass sent alone', () => {
    expect(nextThrottle(0, pass(100, 50), qemu)).toBe(0);
    expect(nextThrottle(3000, pass(100, 10), qemu)).toBe(3000); // never goes down
  });

  it('starts at cpu-throttle-initial and adds cpu-throttle-increment, as QEMU, while the rates ask for less', () => {
    // dirtied 60 of 100 sent: the rate rule asks 1 - 0.5 * 100/60 < 20 %
    expect(nextThrottle(0, pass(100, 60), qemu)).toBe(2000);
    expect(nextThrottle(2000, pass(100, 51), qemu)).toBe(3000);
    expect(nextThrottle(9500, pass(100, 51), qemu)).toBe(9900); // QEMU's ceiling
    expect(nextThrottle(0, pass(100, 60), { initialPercent: 35, incrementPercent: 5 })).toBe(3500);
  });

  it('throttles at once to what brings the dirty rate to half the send rate', () => {
    // the guest dirtied 4x what the link sent, unthrottled: it may run 1/8 of the time
    expect(nextThrottle(0, pass(50, 200), qemu)).toBe(8750);
    // under 50 % throttle it dirtied as much as was sent: its own rate is twice that → run 1/4
    expect(nextThrottle(5000, pass(100, 100), qemu)).toBe(7500);
  });

  it('cuts a saturated measure (the whole RAM dirtied) by another half', () => {
    // dirtied everything it could: 256 of 256 MiB while 256 went out
    expect(nextThrottle(0, pass(256, 256), qemu)).toBe(7500);
    expect(nextThrottle(7500, pass(256, 256), qemu)).toBe(9375);
  });

  it('goes past 99 % by halving the run share, up to 1/10000, and stays there', () => {
    expect(nextThrottle(9900, pass(100, 51), qemu)).toBe(9950);
    let t = 0;
    const seen: number[] = [];
    for (let k = 0; k < 30; k++) {
      t = nextThrottle(t, pass(256, 256), qemu);
      seen.push(t);
    }
    expect(t).toBe(MAX_THROTTLE_UNITS);
    for (let k = 1; k < seen.length; k++) expect(seen[k]).toBeGreaterThanOrEqual(seen[k - 1]!);
    expect(seen.indexOf(MAX_THROTTLE_UNITS)).toBeLessThan(10);
  });

  it('keeps the throttle for a pass that measured nothing', () => {
    expect(nextThrottle(4000, { ...pass(0, 10), sentBytes: 0 }, qemu)).toBe(4000);
    expect(nextThrottle(4000, { ...pass(10, 10), ms: 0 }, qemu)).toBe(4000);
    expect(nextThrottle(Number.NaN, pass(10, 1), qemu)).toBe(0);
  });
});

describe('throttlePercent', () => {
  it('reports units as a percentage with two decimals', () => {
    expect(throttlePercent(0)).toBe(0);
    expect(throttlePercent(2000)).toBe(20);
    expect(throttlePercent(9999)).toBe(99.99);
    expect(throttlePercent(123_456)).toBe(99.99);
  });
});
