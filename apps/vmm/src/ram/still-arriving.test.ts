import { PresentMap, PresentState, presentMapBytes } from '@handoff/bitmap';
import { describe, expect, it } from 'vitest';
import type { RamBacking } from './backing.js';
import { stillArriving } from './lazy.js';

/** A backing with just what stillArriving reads: the spec's id and, when lazy, the map. */
function backing(id: string, map?: PresentMap): RamBacking {
  return {
    spec: { id },
    ...(map !== undefined ? { lazy: { map } } : {}),
  } as unknown as RamBacking;
}

describe('stillArriving', () => {
  it('names each lazy block that is not complete, with its pages present', () => {
    const map = PresentMap.initialize(new SharedArrayBuffer(presentMapBytes(64)), 64);
    map.setState(PresentState.Filling);
    map.markPresent(0, 10);
    expect(stillArriving([backing('ram0', map), backing('ram1')])).toBe('ram0: 10 of 64 pages');
    map.setState(PresentState.SourcePaused);
    expect(stillArriving([backing('ram0', map)])).toBe('ram0: 10 of 64 pages');
  });

  it('is null for ordinary blocks and for lazy blocks whose fill completed', () => {
    const map = PresentMap.initialize(new SharedArrayBuffer(presentMapBytes(8)), 8);
    map.markPresent(0, 8);
    map.setState(PresentState.Complete);
    expect(stillArriving([backing('ram0', map), backing('ram1')])).toBeNull();
    expect(stillArriving([])).toBeNull();
  });
});
