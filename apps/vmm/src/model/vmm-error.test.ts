import { STATUS_BY_CODE } from '@handoff/service';
import { describe, expect, it } from 'vitest';
import { VMM_ERROR_CODES, VmmError } from './vmm-error.js';

describe('VmmError', () => {
  it('has every code in the one status table', () => {
    expect(VMM_ERROR_CODES.filter((c) => STATUS_BY_CODE[c] === undefined)).toEqual([]);
  });

  it('is recognised by name', () => {
    const e = new VmmError('VMM_VM_NOT_FOUND', 'gone');
    expect(VmmError.is(e)).toBe(true);
    expect(VmmError.is(e, 'VMM_VM_EXISTS')).toBe(false);
    expect(VmmError.is(new Error('x'))).toBe(false);
  });
});
