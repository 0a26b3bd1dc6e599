import { describe, expect, it } from 'vitest';
import { parseProcStat, procTable } from './processes.js';

describe('parseProcStat', () => {
  it('reads the state (field 3) and the start time (field 22)', () => {
    const line =
      '1234 (node) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 2 0 0 20 0 11 0 987654 1000 50 ' +
      '18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0';
    expect(parseProcStat(line)).toEqual({ state: 'S', startTime: 987654 });
  });

  it('counts fields after the last ")" so a command name cannot shift them', () => {
    const evil = '77 (a) Z 1 2 3 ) (x) R 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0 0 0 0 0';
    expect(parseProcStat(evil)).toEqual({ state: 'R', startTime: 4242 });
  });

  it('refuses what is not such a line', () => {
    expect(() => parseProcStat('')).toThrow(/not a \/proc/);
    expect(() => parseProcStat('1 (x) S 1 2')).toThrow(/not a \/proc/);
  });
});

describe('procTable', () => {
  it('reads this process, and nothing for a pid that does not exist', () => {
    const me = procTable.stat(process.pid);
    expect(me?.state).toMatch(/^[RS]$/);
    expect(me?.startTime).toBeGreaterThan(0);
    expect(procTable.stat(process.pid)).toEqual(me); // stable
    expect(procTable.stat(2 ** 22 + 12345)).toBeUndefined();
    expect(procTable.bootId()).toMatch(/^[0-9a-f-]{36}$/);
  });
});
