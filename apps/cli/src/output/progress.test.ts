import { describe, expect, it } from 'vitest';
import { emptyMigrationInfo, type MigrationInfo, type MigrationStatus } from '@handoff/qapi';
import { ProgressRenderer, formatDuration } from './progress.js';

function info(status: MigrationStatus, transferred: number, remaining: number): MigrationInfo {
  const base = emptyMigrationInfo(status);
  return { ...base, ram: { ...base.ram, transferred, remaining } };
}

describe('ProgressRenderer', () => {
  it('redraws one line on a terminal with bytes, rate, ETA and status', () => {
    const out: string[] = [];
    let now = 0;
    const p = new ProgressRenderer(
      (t) => out.push(t),
      true,
      () => now,
    );
    p.update({ id: 'j', label: 'mig-1 vm1', info: info('active', 0, 100 << 20) });
    now = 1000;
    p.update({ id: 'j', label: 'mig-1 vm1', info: info('active', 50 << 20, 50 << 20) });
    p.done();
    expect(out[1]!.startsWith('\r\u001b[2K')).toBe(true);
    expect(out[1]).toMatch(/mig-1 vm1 \[#{12}\.{12}\] {2}50% 50 MiB\/100 MiB .*\/s ETA .* active$/);
    expect(out[1]).toContain('ETA 1.0s');
    expect(out.at(-1)).toBe('\n');
  });

  it('prints plain lines off a terminal: on each status change, else at most once a second', () => {
    const out: string[] = [];
    let now = 0;
    const p = new ProgressRenderer(
      (t) => out.push(t),
      false,
      () => now,
    );
    p.update({ id: 'j', label: 'x', info: info('setup', 0, 0) });
    now = 100;
    p.update({ id: 'j', label: 'x', info: info('active', 1, 9) });
    now = 200;
    p.update({ id: 'j', label: 'x', info: info('active', 2, 8) });
    now = 1300;
    p.update({ id: 'j', label: 'x', info: info('active', 3, 7) });
    now = 1400;
    p.update({ id: 'j', label: 'x', info: info('completed', 10, 0) });
    expect(out).toHaveLength(4);
    expect(out.every((l) => l.endsWith('\n') && !l.includes('\r'))).toBe(true);
    expect(out.at(-1)).toMatch(/\[#{24}\] 100% .* ETA 0s completed/);
  });

  it('says the pass and the vCPU throttle while auto-converge throttles, not once completed', () => {
    const p = new ProgressRenderer(
      () => undefined,
      false,
      () => 0,
    );
    const throttled = { ...info('active', 1, 9), iteration: 4, cpuThrottlePercentage: 93.75 };
    expect(p.line({ id: 'j', label: 'x', info: throttled })).toMatch(
      /active pass 4, vCPU throttled 93\.75%$/,
    );
    expect(p.line({ id: 'j', label: 'x', info: info('active', 1, 9) })).toMatch(/active$/);
    const done = { ...info('completed', 10, 0), cpuThrottlePercentage: 99 };
    expect(p.line({ id: 'j', label: 'x', info: done })).toMatch(/completed$/);
  });

  it('formats durations', () => {
    expect(formatDuration(0.25)).toBe('0.3s');
    expect(formatDuration(42)).toBe('42s');
    expect(formatDuration(185)).toBe('3m05s');
    expect(formatDuration(Number.NaN)).toBe('-');
  });
});
