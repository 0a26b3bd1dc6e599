import { describe, expect, it } from 'vitest';
import { TransferProgress } from './transfer.js';

describe('TransferProgress', () => {
  it('redraws one line on a terminal with bytes, rate and ETA, not more often than asked', () => {
    const out: string[] = [];
    let now = 0;
    const p = new TransferProgress(
      'export kv',
      (t) => out.push(t),
      true,
      () => now,
      100,
    );
    p.update(0, 64 << 20);
    now = 50;
    p.update(8 << 20, 64 << 20); // too soon: skipped
    now = 1000;
    p.update(16 << 20, 64 << 20);
    now = 1010;
    p.update(64 << 20, 64 << 20); // the end is always drawn
    p.done();
    expect(out).toHaveLength(4);
    expect(out[1]).toBe(
      '\r\u001b[2Kexport kv [######..................]  25% 16 MiB/64 MiB 16 MiB/s ETA 3.0s',
    );
    expect(out[2]).toMatch(/\[#{24}\] 100% 64 MiB\/64 MiB .*\/s ETA -$/);
    expect(out[3]).toBe('\n');
  });

  it('prints nothing off a terminal', () => {
    const out: string[] = [];
    const p = new TransferProgress('import', (t) => out.push(t), false);
    p.update(1, 2);
    p.update(2, 2);
    p.done();
    expect(out).toEqual([]);
  });
});
