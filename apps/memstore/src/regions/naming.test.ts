import { describe, expect, it } from 'vitest';
import {
  parseRegionFileName,
  regionFileName,
  validateHolder,
  validateRegionName,
} from './naming.js';

describe('validateRegionName', () => {
  it.each(['a', 'vm1-ram', 'kv.server_1', '0', 'a'.repeat(63)])('accepts %j', (name) => {
    expect(() => validateRegionName(name)).not.toThrow();
  });

  it.each([
    '',
    '../etc/passwd',
    'a/b',
    '.hidden',
    '-flag',
    'UPPER',
    'sp ace',
    'a'.repeat(64),
    'nul\u0000',
    'é',
  ])('rejects %j with REGION_INVALID_NAME and the rule', (name) => {
    expect(() => validateRegionName(name)).toThrow(
      expect.objectContaining({
        code: 'REGION_INVALID_NAME',
        message: expect.stringContaining('1 to 63'),
      }),
    );
  });
});

describe('validateHolder', () => {
  it('accepts identities like vmm-a/vm1 and rejects empty or control characters', () => {
    expect(() => validateHolder('vmm-a/vm1')).not.toThrow();
    expect(() => validateHolder('')).toThrow(
      expect.objectContaining({ code: 'REGION_INVALID_ARGUMENT' }),
    );
    expect(() => validateHolder('a\nb')).toThrow(
      expect.objectContaining({ code: 'REGION_INVALID_ARGUMENT' }),
    );
    expect(() => validateHolder('x'.repeat(257))).toThrow(
      expect.objectContaining({ code: 'REGION_INVALID_ARGUMENT' }),
    );
  });
});

describe('region file names', () => {
  const catalogId = '0123456789abcdef';
  const regionId = '3f2b8a1e-9c4d-4e5f-8a7b-1c2d3e4f5a6b';

  it('derive from catalog id and region id only, and parse back', () => {
    const name = regionFileName(catalogId, regionId);
    expect(name).toBe(`region-${catalogId}-${regionId}.mem`);
    expect(parseRegionFileName(name)).toEqual({ catalogId, regionId });
  });

  it.each([
    'catalog.db',
    `region-${catalogId}-${regionId}.mem.tmp`,
    `region-${catalogId}-not-a-uuid.mem`,
    `region-0123-${regionId}.mem`,
    `../region-${catalogId}-${regionId}.mem`,
  ])('ignore other files: %j', (name) => {
    expect(parseRegionFileName(name)).toBeUndefined();
  });

  it('refuse ids that would make an unsafe name', () => {
    expect(() => regionFileName(catalogId, '../x')).toThrow();
  });
});
