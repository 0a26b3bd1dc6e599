import { describe, expect, it } from 'vitest';
import { BITMAP_ERROR_CODES } from '@handoff/bitmap';
import { QAPI_ERROR_CODES } from '@handoff/qapi';
import { SHM_ERROR_CODES } from '@handoff/shm';
import { SNAPSHOT_ERROR_CODES, VMM_ERROR_CODES } from '@handoff/vmm';
import { STATUS_BY_CODE } from '@handoff/service';

describe('the one error-code table', () => {
  it.each([
    ['libs/shm', SHM_ERROR_CODES],
    ['libs/bitmap', BITMAP_ERROR_CODES],
    ['libs/qapi', QAPI_ERROR_CODES],
    ['apps/vmm', VMM_ERROR_CODES],
    ['apps/vmm snapshot', SNAPSHOT_ERROR_CODES],
  ])('maps every code of %s to a gRPC status', (_module, codes) => {
    const missing = [...codes].filter((c) => STATUS_BY_CODE[c] === undefined);
    expect(missing).toEqual([]);
  });
});
