import { describe, expect, it } from 'vitest';
import { INSECURE_CALLER } from '@handoff/service';
import { leaseCallerOf } from './caller.js';

describe('leaseCallerOf', () => {
  it('plaintext: nobody is authenticated, nothing is restricted', () => {
    expect(leaseCallerOf(INSECURE_CALLER)).toEqual({ vmmId: null });
  });

  it('TLS: a vmm may act for its own holders only; other roles are not restricted here', () => {
    expect(leaseCallerOf({ secure: true, identity: { role: 'vmm', id: 'vmm-a' } })).toEqual({
      vmmId: 'vmm-a',
    });
    expect(leaseCallerOf({ secure: true, identity: { role: 'operator', id: 'alice' } })).toEqual({
      vmmId: null,
    });
  });
});
