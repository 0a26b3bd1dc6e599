import { describe, expect, it } from 'vitest';
import { renderTable, toJson } from './render.js';

describe('toJson', () => {
  it('prints kebab-case keys at every depth and bigints as numbers when exact', () => {
    const doc = JSON.parse(
      toJson({ totalSize: 5n, lease: { grantedAt: 'x' }, list: [{ exitCode: 0 }] }),
    );
    expect(doc).toEqual({
      'total-size': 5,
      lease: { 'granted-at': 'x' },
      list: [{ 'exit-code': 0 }],
    });
    expect(JSON.parse(toJson({ big: 2n ** 60n })).big).toBe('1152921504606846976');
  });
});

describe('renderTable', () => {
  it('aligns columns and says (none) for an empty table', () => {
    expect(renderTable(['A', 'LONG'], [['xx', 'y']])).toBe('A   LONG\nxx  y\n');
    expect(renderTable(['A'], [])).toBe('A\n(none)\n');
  });
});
