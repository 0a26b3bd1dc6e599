import { describe, expect, it } from 'vitest';
import { callerOf, leaseCallerOf } from './caller.js';

/** A call object with the given auth context (what grpc-js hands a handler). */
const call = (ctx: ReturnType<Parameters<typeof callerOf>[0]['getAuthContext']>) => ({
  getAuthContext: () => ctx,
});

const cert = (cn: string, ou: string) => ({ subject: { CN: cn, OU: ou } }) as never;

describe('callerOf', () => {
  it('plaintext: nobody is authenticated, nothing is restricted', () => {
    const c = callerOf(call({}));
    expect(c).toEqual({ secure: false });
    expect(leaseCallerOf(c)).toEqual({ vmmId: null });
    expect(callerOf(call(null))).toEqual({ secure: false });
  });

  it('TLS: the certificate names the caller; a vmm may act for its own holders only', () => {
    const vmm = callerOf(
      call({ transportSecurityType: 'ssl', sslPeerCertificate: cert('vmm-a', 'vmm') }),
    );
    expect(vmm).toEqual({ secure: true, identity: { role: 'vmm', id: 'vmm-a' } });
    expect(leaseCallerOf(vmm)).toEqual({ vmmId: 'vmm-a' });
    const op = callerOf(
      call({ transportSecurityType: 'ssl', sslPeerCertificate: cert('alice', 'operator') }),
    );
    expect(leaseCallerOf(op)).toEqual({ vmmId: null });
  });

  it('TLS without a usable certificate: no caller (refused by the role checks)', () => {
    expect(callerOf(call({ transportSecurityType: 'ssl' }))).toBeNull();
    expect(
      callerOf(call({ transportSecurityType: 'ssl', sslPeerCertificate: cert('x', 'nobody') })),
    ).toBeNull();
  });
});
