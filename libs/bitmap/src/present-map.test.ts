import { describe, expect, it } from 'vitest';
import { BitmapError, PresentMap, PresentState, presentMapBytes } from './index.js';

describe('PresentMap', () => {
  it('marks ranges across word edges, counts only new pages and finds the next missing one', () => {
    const buf = new SharedArrayBuffer(presentMapBytes(100));
    const w = PresentMap.initialize(buf, 100);
    expect(w.state).toBe(PresentState.Waiting);
    expect(w.markPresent(30, 40)).toBe(40);
    expect(w.markPresent(0, 35)).toBe(30);
    expect(w.presentPages).toBe(70);
    expect(w.isPresent(69)).toBe(true);
    expect(w.isPresent(70)).toBe(false);
    expect(w.allPresent(0, 70)).toBe(true);
    expect(w.allPresent(60, 11)).toBe(false);
    expect(w.nextMissing(0)).toBe(70);
    w.markPresent(70, 30);
    expect(w.nextMissing(0)).toBe(-1);
    expect(w.sequence).toBe(3);
  });

  it('a reader in another view sees what the writer set, and its state', () => {
    const buf = new SharedArrayBuffer(presentMapBytes(64));
    const w = PresentMap.initialize(buf, 64);
    const r = PresentMap.open(buf, 64);
    w.markPresent(5, 1);
    w.setState(PresentState.SourcePaused);
    expect(r.isPresent(5)).toBe(true);
    expect(r.isPresent(4)).toBe(false);
    expect(r.state).toBe(PresentState.SourcePaused);
  });

  it('refuses a hostile file: bad magic, newer major, another page count, short buffer', () => {
    const buf = new SharedArrayBuffer(presentMapBytes(64));
    PresentMap.initialize(buf, 64);
    expect(() => PresentMap.open(buf, 65)).toThrow(/covers 64 pages/);
    const words = new Int32Array(buf);
    words[1] = 2 << 16;
    expect(() => PresentMap.open(buf, 64)).toThrow(BitmapError);
    words[0] = 0;
    expect(() => PresentMap.open(buf, 64)).toThrow(/bad magic/);
    expect(() => PresentMap.open(new SharedArrayBuffer(16), 64)).toThrow(/shorter than its header/);
    expect(() => PresentMap.initialize(buf, 0)).toThrow(/1 to 2\^27 pages/);
  });

  it('refuses marks outside the map', () => {
    const w = PresentMap.initialize(new SharedArrayBuffer(presentMapBytes(10)), 10);
    expect(() => w.markPresent(8, 3)).toThrow(/outside a map of 10/);
  });
});
