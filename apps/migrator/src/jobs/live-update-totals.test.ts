import { describe, expect, it } from 'vitest';
import { emptyMigrationInfo, type MigrationStatus } from '@handoff/qapi';
import { LiveUpdateTotals } from './live-update-totals.js';
import type { Job } from './job.js';

function child(
  id: string,
  status: MigrationStatus,
  transferred: number,
  extra: { downtimeUs?: number; deviceBytes?: number; setupTimeMs?: number } = {},
): Job {
  const info = emptyMigrationInfo(status);
  return {
    id,
    info: {
      ...info,
      ram: { ...info.ram, transferred },
      downtimeUs: extra.downtimeUs ?? 0,
      deviceBytes: extra.deviceBytes ?? 0,
      setupTimeMs: extra.setupTimeMs ?? 0,
    },
    finishedAt: status === 'completed' || status === 'failed' ? new Date() : undefined,
  } as Job;
}

describe('LiveUpdateTotals', () => {
  it('replaces a child’s previous report instead of adding it again', () => {
    const t = new LiveUpdateTotals();
    t.observe(child('a', 'active', 100));
    t.observe(child('a', 'active', 300));
    t.observe(child('b', 'active', 50));
    expect(t.sums().ram.transferred).toBe(350);
    t.observe(child('a', 'completed', 400, { deviceBytes: 10 }));
    t.observe(child('a', 'completed', 400, { deviceBytes: 10 }));
    expect(t.sums()).toMatchObject({ deviceBytes: 10, iteration: 1 });
    expect(t.sums().ram.transferred).toBe(450);
  });

  it('keeps the longest pause and setup and counts each ended child once', () => {
    const t = new LiveUpdateTotals();
    t.observe(child('a', 'completed', 0, { downtimeUs: 900, setupTimeMs: 3 }));
    t.observe(child('b', 'failed', 0, { downtimeUs: 1500, setupTimeMs: 1 }));
    t.observe(child('c', 'active', 0));
    t.observe(child('b', 'failed', 0, { downtimeUs: 1500, setupTimeMs: 1 }));
    expect(t.sums()).toMatchObject({ downtimeUs: 1500, setupTimeMs: 3, iteration: 2 });
  });

  it('agrees with a full recomputation after many interleaved reports', () => {
    const t = new LiveUpdateTotals();
    const last = new Map<string, Job>();
    for (let step = 0; step < 2000; step++) {
      const id = `c${(step * 7) % 200}`;
      const done = step >= 1800;
      const j = child(id, done ? 'completed' : 'active', step, { deviceBytes: step % 13 });
      t.observe(j);
      last.set(id, j);
    }
    const all = [...last.values()];
    expect(t.sums().ram.transferred).toBe(all.reduce((s, j) => s + j.info.ram.transferred, 0));
    expect(t.sums().deviceBytes).toBe(all.reduce((s, j) => s + j.info.deviceBytes, 0));
    expect(t.sums().iteration).toBe(all.filter((j) => j.finishedAt !== undefined).length);
  });
});
