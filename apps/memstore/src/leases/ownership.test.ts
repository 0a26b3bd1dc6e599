import { describe, expect, it } from 'vitest';
import { ANY_CALLER, assertMayMove, assertOwnHolder } from './ownership.js';

describe('lease ownership', () => {
  const b = { vmmId: 'vmm-b' };

  it('a vmm acquires and releases only for its own holders', () => {
    expect(() => assertOwnHolder(b, 'vmm-b/vm1', 'AcquireLease')).not.toThrow();
    for (const h of ['vmm-a/vm1', 'vmm-bb/vm1', 'vmm-b', 'vmm-b-x/vm1']) {
      expect(() => assertOwnHolder(b, h, 'AcquireLease')).toThrow(
        expect.objectContaining({
          code: 'LEASE_FOREIGN_HOLDER',
          message: expect.stringContaining('AcquireLease: vmm vmm-b') as string,
        }),
      );
    }
  });

  it('a vmm moves a lease only to its own holder, or away from one (a hand-back)', () => {
    expect(() => assertMayMove(b, 'vmm-a/vm1', 'vmm-b/vm1', 'TransferLease')).not.toThrow();
    expect(() => assertMayMove(b, 'vmm-b/vm1', 'vmm-a/vm1', 'TransferLease')).not.toThrow();
    expect(() => assertMayMove(b, 'vmm-a/vm1', 'vmm-c/vm1', 'ArmTransfer')).toThrow(
      expect.objectContaining({ code: 'LEASE_FOREIGN_HOLDER' }),
    );
  });

  it('a caller not known to be a vmm is not restricted', () => {
    expect(() => assertOwnHolder(ANY_CALLER, 'vmm-a/vm1', 'x')).not.toThrow();
    expect(() => assertMayMove(ANY_CALLER, 'vmm-a/vm1', 'vmm-c/vm1', 'x')).not.toThrow();
  });
});
