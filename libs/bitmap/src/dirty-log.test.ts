import { describe, expect, it } from 'vitest';

import { AtomicDirtyLog } from './atomic-dirty-log.js';
import { DirtyLog, NO_DIRTY_TRACKING } from './dirty-log.js';
import { EpochDirtyLog, EpochDirtyWriter, MAX_EPOCH_WRITERS } from './epoch-dirty-log.js';
import { PageBitmap } from './page-bitmap.js';
import { expectBitmapError } from './testing/support.js';

describe('DirtyLog (single thread, double buffered)', () => {
  it('harvest returns the marks since the previous harvest and alternates two buffers', () => {
    const log = new DirtyLog(100);
    log.mark(3);
    log.markRange(60, 70);
    expect(log.isDirty(3)).toBe(true);
    expect(log.dirtyCount()).toBe(11);
    const h1 = log.harvest();
    expect(h1.toIndices()).toEqual([3, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69]);
    expect(log.dirtyCount()).toBe(0);
    log.mark(99);
    const h2 = log.harvest();
    expect(h2).not.toBe(h1);
    expect(h2.toIndices()).toEqual([99]);
    // The first buffer comes back cleared: no stale bit from harvest 1.
    const h3 = log.harvest();
    expect(h3).toBe(h1);
    expect(h3.isEmpty()).toBe(true);
  });

  it('markAll and markBitmap (requeue a failed send)', () => {
    const log = new DirtyLog(70);
    log.markAll();
    expect(log.harvest().popcount()).toBe(70);
    log.markBitmap(PageBitmap.fromIndices(70, [1, 69]));
    expect(log.harvest().toIndices()).toEqual([1, 69]);
    expectBitmapError(() => log.markBitmap(new PageBitmap(71)), 'BITMAP_SIZE_MISMATCH');
  });

  it('mark is checked', () => {
    const log = new DirtyLog(10);
    expectBitmapError(() => log.mark(10), 'BITMAP_OUT_OF_RANGE');
    expectBitmapError(() => log.mark(-1), 'BITMAP_OUT_OF_RANGE');
    expectBitmapError(() => log.markRange(5, 11), 'BITMAP_OUT_OF_RANGE');
    expect(log.harvest().isEmpty()).toBe(true);
  });

  it('NO_DIRTY_TRACKING accepts anything and records nothing', () => {
    NO_DIRTY_TRACKING.mark(123);
    NO_DIRTY_TRACKING.markRange(0, 10);
    expect(Object.isFrozen(NO_DIRTY_TRACKING)).toBe(true);
  });
});

describe('AtomicDirtyLog (single-thread behaviour)', () => {
  it('marks, reports and harvests with read-and-clear', () => {
    const log = AtomicDirtyLog.create(130);
    expect(log.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(log.buffer.byteLength).toBe(AtomicDirtyLog.byteLengthFor(130));
    log.mark(0);
    log.mark(129);
    log.markRange(30, 70);
    expect(log.isDirty(129)).toBe(true);
    const h = log.harvest();
    expect(h.popcount()).toBe(42);
    expect(h.test(0) && h.test(129) && h.test(30) && h.test(69) && !h.test(70)).toBe(true);
    expect(log.isDirty(129)).toBe(false);
    expect(log.harvest()).toBe(h); // reused result object
    expect(h.isEmpty()).toBe(true);
  });

  it('attach sees the same log; checks indexes and foreign buffers', () => {
    const a = AtomicDirtyLog.create(64);
    const b = AtomicDirtyLog.attach(a.buffer);
    expect(b.size).toBe(64);
    b.mark(63);
    expect(a.harvest().toIndices()).toEqual([63]);
    expectBitmapError(() => a.mark(64), 'BITMAP_OUT_OF_RANGE');
    expectBitmapError(() => a.markRange(0, 65), 'BITMAP_OUT_OF_RANGE');
    expectBitmapError(() => a.isDirty(-1), 'BITMAP_OUT_OF_RANGE');
    expectBitmapError(
      () => AtomicDirtyLog.attach(new SharedArrayBuffer(64)),
      'BITMAP_INVALID_ARGUMENT',
    );
    expectBitmapError(
      () => AtomicDirtyLog.attach(new ArrayBuffer(64) as unknown as SharedArrayBuffer),
      'BITMAP_INVALID_ARGUMENT',
    );
    expectBitmapError(
      () => AtomicDirtyLog.attach(EpochDirtyLog.create(64).buffer),
      'BITMAP_INVALID_ARGUMENT',
    );
  });
});

describe('EpochDirtyLog (single-thread behaviour)', () => {
  it('a harvest waits for a remote writer to sync, then returns its marks', () => {
    const log = EpochDirtyLog.create(100, { writers: 2 });
    const remote = EpochDirtyWriter.attach(log.buffer, 1); // not local: never auto-synced
    remote.mark(5);
    expect(log.harvestPending).toBe(false);
    expect(log.tryCollect()).toBeNull(); // nothing requested
    expect(log.requestHarvest()).toBe(true);
    expect(log.requestHarvest()).toBe(false); // already pending
    expect(log.harvestPending).toBe(true);
    expect(log.laggingWriters()).toEqual([1]);
    remote.mark(6); // still the old epoch's buffer: part of this harvest
    expect(log.tryCollect()).toBeNull();
    remote.sync();
    remote.mark(7); // new epoch
    const h = log.tryCollect();
    expect(h?.toIndices()).toEqual([5, 6]);
    expect(log.harvestPending).toBe(false);
    log.requestHarvest();
    remote.sync();
    expect(log.tryCollect()?.toIndices()).toEqual([7]);
  });

  it('parked writers do not delay harvests and keep their marks', () => {
    const log = EpochDirtyLog.create(64, { writers: 2 });
    const w = EpochDirtyWriter.attach(log.buffer, 0);
    w.mark(1);
    w.park();
    expect(w.parked).toBe(true);
    expectBitmapError(() => w.mark(2), 'BITMAP_INVALID_STATE');
    expectBitmapError(() => w.markRange(2, 3), 'BITMAP_INVALID_STATE');
    expect(log.harvestSync(0).toIndices()).toEqual([1]); // slot 1 never attached: parked
    w.sync();
    w.mark(2);
    w.park();
    expect(log.harvestSync(0).toIndices()).toEqual([2]);
  });

  it('returns a view of the writer buffer (no copy), cleared at the next request', () => {
    const log = EpochDirtyLog.create(64, { writers: 1 });
    const w = log.writer(0);
    w.mark(1);
    const h1 = log.harvestSync(0);
    expect(h1.words.buffer).toBe(log.buffer);
    expect(h1.toIndices()).toEqual([1]);
    w.mark(2);
    log.requestHarvest();
    expect(h1.isEmpty()).toBe(true); // h1 was recycled as the active buffer
    const h2 = log.tryCollect();
    expect(h2).not.toBe(h1);
    expect(h2?.toIndices()).toEqual([2]);
    w.close();
    const w2 = log.writer(0); // closed local writers are dropped
    w2.mark(3);
    expect(log.harvestSync(0).toIndices()).toEqual([3]);
  });

  it('local writers are synced by requestHarvest', () => {
    const log = EpochDirtyLog.create(64, { writers: 1 });
    const w = log.writer(0);
    w.markRange(10, 20);
    expect(log.harvestSync(0).popcount()).toBe(10);
    w.mark(63);
    expect(log.harvestSync(0).toIndices()).toEqual([63]);
  });

  it('harvestSync times out (harvest stays pending), harvestAsync resolves after a later sync', async () => {
    const log = EpochDirtyLog.create(64, { writers: 1 });
    const w = EpochDirtyWriter.attach(log.buffer, 0);
    w.mark(9);
    const e = expectBitmapError(() => log.harvestSync(20), 'BITMAP_TIMEOUT');
    expect(e.message).toMatch(/slot\(s\) 0/);
    expect(log.harvestPending).toBe(true);
    const pending = log.harvestAsync(5_000);
    setTimeout(() => w.sync(), 20);
    expect((await pending).toIndices()).toEqual([9]);
    await expect(
      (async () => {
        log.requestHarvest();
        return log.harvestAsync(10);
      })(),
    ).rejects.toMatchObject({ code: 'BITMAP_TIMEOUT' });
  });

  it('slots are claimed once; close releases them; closed writers refuse to mark', () => {
    const log = EpochDirtyLog.create(64, { writers: 1 });
    const w = EpochDirtyWriter.attach(log.buffer, 0);
    expectBitmapError(() => EpochDirtyWriter.attach(log.buffer, 0), 'BITMAP_INVALID_STATE');
    w.close();
    expectBitmapError(() => w.mark(0), 'BITMAP_INVALID_STATE');
    expectBitmapError(() => w.sync(), 'BITMAP_INVALID_STATE');
    const w2 = EpochDirtyWriter.attach(log.buffer, 0);
    w2.mark(0);
    expectBitmapError(() => w2.mark(64), 'BITMAP_OUT_OF_RANGE');
    expectBitmapError(() => w2.markRange(0, 65), 'BITMAP_OUT_OF_RANGE');
    expectBitmapError(() => EpochDirtyWriter.attach(log.buffer, 1), 'BITMAP_INVALID_ARGUMENT');
  });

  it('validates sizes, writer counts and buffers', () => {
    expectBitmapError(() => EpochDirtyLog.create(-1), 'BITMAP_INVALID_ARGUMENT');
    expectBitmapError(() => EpochDirtyLog.create(8, { writers: 0 }), 'BITMAP_INVALID_ARGUMENT');
    expectBitmapError(
      () => EpochDirtyLog.create(8, { writers: MAX_EPOCH_WRITERS + 1 }),
      'BITMAP_INVALID_ARGUMENT',
    );
    expectBitmapError(
      () => EpochDirtyLog.attach(AtomicDirtyLog.create(8).buffer),
      'BITMAP_INVALID_ARGUMENT',
    );
    const log = EpochDirtyLog.create(1000, { writers: 3 });
    expect(log.buffer.byteLength).toBe(EpochDirtyLog.byteLengthFor(1000, 3));
    const h = EpochDirtyLog.attach(log.buffer);
    expect([h.size, h.writers]).toEqual([1000, 3]);
  });

  it('keeps alternating buffers across the epoch wrap-around', () => {
    const log = EpochDirtyLog.create(64, { writers: 1 });
    const ctrl = new Int32Array(log.buffer);
    ctrl[4] = 0x3fffffff - 2; // SEQ (odd) — layout documented in epoch-dirty-log.ts
    ctrl[5] = 0x3fffffff - 2; // COLLECTED
    const w = log.writer(0);
    for (let i = 0; i < 6; i++) {
      w.mark(i);
      expect(log.harvestSync(0).toIndices()).toEqual([i]);
    }
    expect(log.epoch).toBeLessThan(8);
  });
});
