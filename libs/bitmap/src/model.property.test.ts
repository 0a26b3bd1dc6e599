/**
 * Property tests: random operation sequences against the naive boolean-array model, for the
 * bitmap itself and for every dirty log (driven from one thread), plus wire round trips.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { AtomicDirtyLog } from './atomic-dirty-log.js';
import { DirtyLog } from './dirty-log.js';
import { EpochDirtyLog } from './epoch-dirty-log.js';
import { PageBitmap } from './page-bitmap.js';
import { Model, bitmapArb, expectMatchesModel, scenarioArb } from './testing/support.js';
import type { Op } from './testing/support.js';
import { decode, decodeInto, encode, encodedByteLength } from './wire.js';

const RUNS = { numRuns: 300 };

function modelFromIndices(size: number, indices: number[]): Model {
  const m = new Model(size);
  for (const i of indices) m.set(i);
  return m;
}

describe('PageBitmap matches the boolean-array model', () => {
  it('after any sequence of set/clear/range/or/andNot/setAll/clearAll/harvest', () => {
    fc.assert(
      fc.property(scenarioArb, ({ size, ops }) => {
        const b = new PageBitmap(size);
        const m = new Model(size);
        for (const op of ops) applyToBitmap(b, m, op);
        expectMatchesModel(b, m);
      }),
      RUNS,
    );
  });
});

function applyToBitmap(b: PageBitmap, m: Model, op: Op): void {
  switch (op.kind) {
    case 'set':
      b.set(op.index);
      m.set(op.index);
      break;
    case 'clear':
      b.clear(op.index);
      m.clear(op.index);
      break;
    case 'setRange':
      b.setRange(op.start, op.end);
      m.fill(op.start, op.end, true);
      break;
    case 'clearRange':
      b.clearRange(op.start, op.end);
      m.fill(op.start, op.end, false);
      break;
    case 'or':
      b.or(PageBitmap.fromIndices(b.size, op.indices));
      m.or(modelFromIndices(m.size, op.indices));
      break;
    case 'andNot':
      b.andNot(PageBitmap.fromIndices(b.size, op.indices));
      m.andNot(modelFromIndices(m.size, op.indices));
      break;
    case 'setAll':
      b.setAll();
      m.fill(0, m.size, true);
      break;
    case 'clearAll':
    case 'harvest':
      b.clearAll();
      m.fill(0, m.size, false);
      break;
  }
}

/** A dirty log driven from one thread, behind one shape for the model test. */
interface LogUnderTest {
  mark(i: number): void;
  markRange(s: number, e: number): void;
  /** OR a bitmap in (not every log has it natively). */
  markBitmap(b: PageBitmap): void;
  markAll(): void;
  harvest(): PageBitmap;
}

const logs: Record<string, (size: number) => LogUnderTest> = {
  DirtyLog: (size) => new DirtyLog(size),
  AtomicDirtyLog: (size) => {
    const log = AtomicDirtyLog.create(size);
    return {
      mark: (i) => log.mark(i),
      markRange: (s, e) => log.markRange(s, e),
      markBitmap: (b) => b.forEachRun((s, n) => log.markRange(s, s + n)),
      markAll: () => log.markRange(0, size),
      harvest: () => log.harvest(),
    };
  },
  EpochDirtyLog: (size) => {
    const log = EpochDirtyLog.create(size, { writers: 3 });
    // Slot 0 local (auto-synced), slot 1 "remote" but driven here, slot 2 parked.
    const local = log.writer(0);
    const other = log.writer(1);
    const parked = log.writer(2);
    parked.park();
    let turn = 0;
    const pick = () => (turn++ % 2 === 0 ? local : other);
    return {
      mark: (i) => pick().mark(i),
      markRange: (s, e) => pick().markRange(s, e),
      markBitmap: (b) => b.forEachRun((s, n) => pick().markRange(s, s + n)),
      markAll: () => pick().markRange(0, size),
      harvest: () => {
        expect(log.requestHarvest()).toBe(true);
        const r = log.tryCollect();
        if (r === null) throw new Error('local writers should have acknowledged');
        return r;
      },
    };
  },
};

describe.each(Object.keys(logs))('%s matches the model', (name) => {
  it('every harvest returns exactly the pages marked since the previous one', () => {
    fc.assert(
      fc.property(scenarioArb, ({ size, ops }) => {
        const log = logs[name]!(size);
        let pending = new Model(size);
        for (const op of ops) {
          switch (op.kind) {
            case 'set':
              log.mark(op.index);
              pending.set(op.index);
              break;
            case 'setRange':
              log.markRange(op.start, op.end);
              pending.fill(op.start, op.end, true);
              break;
            case 'or':
              log.markBitmap(PageBitmap.fromIndices(size, op.indices));
              pending.or(modelFromIndices(size, op.indices));
              break;
            case 'setAll':
              log.markAll();
              pending.fill(0, size, true);
              break;
            case 'harvest': {
              const h = log.harvest();
              expectMatchesModel(h, pending);
              pending = new Model(size);
              break;
            }
            default:
              break; // clears do not exist on a dirty log
          }
        }
        expectMatchesModel(log.harvest(), pending);
        expect(log.harvest().isEmpty()).toBe(true);
      }),
      { numRuns: 150 },
    );
  });
});

describe('wire round trip', () => {
  it('decode(encode(b)) equals b, and decodeInto fills a same-size bitmap', () => {
    fc.assert(
      fc.property(bitmapArb, ({ size, indices }) => {
        const b = PageBitmap.fromIndices(size, indices);
        const bytes = encode(b);
        expect(bytes.length).toBe(encodedByteLength(size));
        expect(bytes.length % 8).toBe(0);
        const d = decode(bytes, { expectedBits: size, maxBits: size });
        expect(d.equals(b)).toBe(true);
        expectMatchesModel(d, modelFromIndices(size, indices));
        const target = new PageBitmap(size);
        target.setAll();
        expect(decodeInto(bytes, target).equals(b)).toBe(true);
        expect(encode(d)).toEqual(bytes);
      }),
      RUNS,
    );
  });

  it('decodes from a Buffer at an odd byte offset', () => {
    fc.assert(
      fc.property(bitmapArb, fc.integer({ min: 0, max: 7 }), ({ size, indices }, pad) => {
        const b = PageBitmap.fromIndices(size, indices);
        const bytes = encode(b);
        const host = Buffer.alloc(bytes.length + pad);
        host.set(bytes, pad);
        expect(decode(host.subarray(pad)).equals(b)).toBe(true);
      }),
      { numRuns: 100 },
    );
  });
});
