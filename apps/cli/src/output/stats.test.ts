import { describe, expect, it } from 'vitest';
import { formatMicros, percentile } from './stats.js';

describe('percentile', () => {
  it('takes the nearest rank: p50 and p99 of clone latencies', () => {
    const us = Array.from({ length: 100 }, (_, i) => (100 - i) * 10); // 1000 .. 10, unsorted
    expect(percentile(us, 50)).toBe(500);
    expect(percentile(us, 99)).toBe(990);
    expect(percentile(us, 100)).toBe(1000);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([3, 1, 2], 50)).toBe(2);
    expect(percentile([], 50)).toBeNaN();
  });
});

describe('formatMicros', () => {
  it('prints milliseconds, and "-" for what is not known', () => {
    expect(formatMicros(812)).toBe('0.812 ms');
    expect(formatMicros(2_500_000)).toBe('2500.000 ms');
    expect(formatMicros(0)).toBe('-');
    expect(formatMicros(Number.NaN)).toBe('-');
  });
});
