import { describe, expect, it } from 'vitest';
import { Timers } from './timers.js';

describe('Timers', () => {
  it('pops deadlines earliest first', () => {
    const t = new Timers<string>();
    const ats = [5, 1, 9, 3, 3, 7, 0.5, 12, 2];
    ats.forEach((at, k) => t.push(at, `v${k}`));
    expect(t.next).toBe(0.5);
    const popped: number[] = [];
    for (let e = t.pop(); e !== undefined; e = t.pop()) popped.push(e.at);
    expect(popped).toEqual([...ats].sort((a, b) => a - b));
    expect(t.next).toBe(Infinity);
  });

  it('drops every entry of one owner and keeps the order of the rest', () => {
    const t = new Timers<string>();
    for (const [at, who] of [
      [4, 'a'],
      [2, 'b'],
      [1, 'a'],
      [3, 'c'],
    ] as const)
      t.push(at, who);
    t.drop('a');
    expect(t.size).toBe(2);
    expect([t.pop()?.owner, t.pop()?.owner, t.pop()]).toEqual(['b', 'c', undefined]);
  });
});
