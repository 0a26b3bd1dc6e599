import { describe, expect, it } from 'vitest';
import { parseHostCount } from './hosts.js';

describe('--hosts', () => {
  it('is 1 by default and takes 1 or 2', () => {
    expect(parseHostCount(undefined)).toBe(1);
    expect(parseHostCount('1')).toBe(1);
    expect(parseHostCount('2')).toBe(2);
  });

  it('refuses any other count, saying what is supported', () => {
    for (const bad of ['0', '3', 'two', '2.0', '-1', '']) {
      const r = parseHostCount(bad);
      expect(r, bad).toBeInstanceOf(Error);
      expect((r as Error).message).toMatch(/is not supported: the local cluster runs 1 or 2 hosts/);
    }
  });
});
