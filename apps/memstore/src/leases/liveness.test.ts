import { describe, expect, it } from 'vitest';
import { judgeProcess, vmmIdOfHolder } from './liveness.js';
import type { ProcessStat, ProcessTable } from './processes.js';

/** A table of the given processes in boot `boot`; `fail` makes every read throw. */
function table(procs: Record<number, ProcessStat>, boot = 'b1', fail = false): ProcessTable {
  return {
    stat: (pid) => {
      if (fail) throw new Error('EACCES');
      return procs[pid];
    },
    bootId: () => boot,
  };
}

const rec = { pid: 10, startTime: 500, bootId: 'b1' };

describe('judgeProcess', () => {
  it('alive: the same pid, start time and boot, not a zombie', () => {
    expect(judgeProcess(rec, table({ 10: { state: 'S', startTime: 500 } })).liveness).toBe('alive');
    expect(judgeProcess(rec, table({ 10: { state: 'D', startTime: 500 } })).liveness).toBe('alive');
  });

  it('gone: exited, a zombie or dead, a reused pid, another boot', () => {
    const cases: [ProcessTable, RegExp][] = [
      [table({}), /exited/],
      [table({ 10: { state: 'Z', startTime: 500 } }), /zombie/],
      [table({ 10: { state: 'X', startTime: 500 } }), /zombie/],
      [table({ 10: { state: 'S', startTime: 501 } }), /another/],
      [table({ 10: { state: 'S', startTime: 500 } }, 'b2'), /rebooted/],
    ];
    for (const [t, reason] of cases) {
      const j = judgeProcess(rec, t);
      expect(j.liveness).toBe('gone');
      expect(j.reason).toMatch(reason);
    }
  });

  it('unknown: pid 0 (another pid namespace), or a table that cannot be read', () => {
    expect(judgeProcess({ ...rec, pid: 0 }, table({})).liveness).toBe('unknown');
    expect(judgeProcess(rec, table({}, 'b1', true))).toEqual({
      liveness: 'unknown',
      reason: expect.stringContaining('EACCES') as string,
    });
  });
});

describe('vmmIdOfHolder', () => {
  it('is the part before the first "/", when there is one', () => {
    expect(vmmIdOfHolder('vmm-a/vm1')).toBe('vmm-a');
    expect(vmmIdOfHolder('vmm-a/x/y')).toBe('vmm-a');
    expect(vmmIdOfHolder('plain')).toBeUndefined();
    expect(vmmIdOfHolder('/vm1')).toBeUndefined();
  });
});
