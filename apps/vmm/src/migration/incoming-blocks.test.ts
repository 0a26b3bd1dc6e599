import { describe, expect, it } from 'vitest';
import type { RamBlockSpec } from '../model/types.js';
import { copiedSpec, referencedSpec, refuseClaim } from './incoming-blocks.js';

const shared = (region: string, regionOwned?: boolean): RamBlockSpec => ({
  id: 'ram0',
  guestBase: 0x8000_0000,
  size: 1 << 20,
  backend: 'shared',
  region,
  ...(regionOwned !== undefined ? { regionOwned } : {}),
});

const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
};

describe('region ownership of an incoming block', () => {
  it('keeps the claim on the region a vmm creates for the VM (<vm>-<block>)', () => {
    expect(referencedSpec(shared('kv-ram0', true), 'kv', 'kv-ram0')).toEqual(
      shared('kv-ram0', true),
    );
    // no claim: the region is the user's and is kept
    expect(referencedSpec(shared('mine'), 'kv', 'mine').regionOwned).toBeUndefined();
  });

  it('refuses a claim on a region of any other name, so no stream can delete a user region', () => {
    expect(codeOf(() => referencedSpec(shared('mine', true), 'kv', 'mine'))).toBe(
      'MIGRATION_REGION_MISMATCH',
    );
    // the name of another VM's region, or of another block
    expect(codeOf(() => referencedSpec(shared('db-ram0', true), 'kv', 'db-ram0'))).toBe(
      'MIGRATION_REGION_MISMATCH',
    );
    expect(codeOf(() => referencedSpec(shared('kv-ram1', true), 'kv', 'kv-ram1'))).toBe(
      'MIGRATION_REGION_MISMATCH',
    );
  });

  it('a copied block lands in private memory and owns nothing; a clone never owns its template', () => {
    const copied = copiedSpec(shared('kv-ram0', true));
    expect(copied).toEqual({
      id: 'ram0',
      guestBase: 0x8000_0000,
      size: 1 << 20,
      backend: 'private',
      region: '',
    });
    expect(codeOf(() => refuseClaim({ ...shared('tpl', true), backend: 'clone' }, 'block 0'))).toBe(
      'MIGRATION_REGION_MISMATCH',
    );
    expect(codeOf(() => refuseClaim(shared('kv-ram0', true), 'block 0'))).toBeUndefined();
  });
});
