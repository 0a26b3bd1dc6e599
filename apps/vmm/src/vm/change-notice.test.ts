import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChangeNotice } from './change-notice.js';

describe('ChangeNotice', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('tells a lone change after the delay, never in the same turn', () => {
    const fired: number[] = [];
    const n = new ChangeNotice(
      () => fired.push(Date.now()),
      20,
      250,
      () => Date.now(),
    );
    const t0 = Date.now();
    n.changed();
    expect(fired).toHaveLength(0);
    vi.advanceTimersByTime(19);
    expect(fired).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(fired).toEqual([t0 + 20]);
  });

  it('a burst of changes costs one notice per interval, and the last change is told', () => {
    let fired = 0;
    const n = new ChangeNotice(
      () => fired++,
      20,
      250,
      () => Date.now(),
    );
    // 200 changes, one every 10 ms (a live update): 2 s of changes
    for (let k = 0; k < 200; k++) {
      n.changed();
      vi.advanceTimersByTime(10);
    }
    expect(fired).toBeLessThanOrEqual(1 + Math.ceil(2000 / 250));
    expect(fired).toBeGreaterThanOrEqual(2000 / 250 - 1);
    const before = fired;
    vi.advanceTimersByTime(250);
    expect(fired).toBe(before + 1); // the changes after the last notice are told too
    vi.advanceTimersByTime(1000);
    expect(fired).toBe(before + 1); // and nothing more without a change
  });

  it('a change after a quiet spell is told after the short delay again', () => {
    let fired = 0;
    const n = new ChangeNotice(
      () => fired++,
      20,
      250,
      () => Date.now(),
    );
    n.changed();
    vi.advanceTimersByTime(20);
    vi.advanceTimersByTime(1000);
    n.changed();
    vi.advanceTimersByTime(20);
    expect(fired).toBe(2);
  });
});
