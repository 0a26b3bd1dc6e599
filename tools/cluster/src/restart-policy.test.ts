import { describe, expect, it } from 'vitest';
import { DEFAULT_RESTART_POLICY, RestartBackoff } from './restart-policy.js';

describe('the restart backoff', () => {
  it('doubles from 0.5 s to at most 10 s for a service that dies at once, then gives up', () => {
    const b = new RestartBackoff({ ...DEFAULT_RESTART_POLICY, maxCrashes: 9, windowMs: 600_000 });
    let now = 0;
    const delays: number[] = [];
    for (;;) {
      const d = b.crashed(now, now - 100); // up for 0.1 s each time
      if (!d.restart) {
        expect(d.crashes).toBe(9);
        break;
      }
      delays.push(d.delayMs);
      now += d.delayMs + 100;
    }
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
  });

  it('starts over at 0.5 s once the service stayed up 30 s', () => {
    const b = new RestartBackoff();
    expect(b.crashed(1000, 900)).toEqual({ restart: true, delayMs: 500 });
    expect(b.crashed(2000, 1600)).toEqual({ restart: true, delayMs: 1000 });
    expect(b.crashed(3500, 2100)).toEqual({ restart: true, delayMs: 2000 });
    expect(b.crashed(40_000, 6000)).toEqual({ restart: true, delayMs: 500 });
  });

  it('gives up after 6 deaths within a minute, but not for deaths spread wider', () => {
    const spread = new RestartBackoff();
    for (let k = 0; k < 20; k++) {
      expect(spread.crashed(k * 15_000, k * 15_000 - 14_000).restart).toBe(true);
    }
    const fast = new RestartBackoff();
    const decisions = [0, 1, 2, 3, 4, 5].map((k) => fast.crashed(k * 5000, k * 5000 - 100));
    expect(decisions.map((d) => d.restart)).toEqual([true, true, true, true, true, false]);
    expect(decisions[5]).toEqual({ restart: false, crashes: 6 });
  });
});
