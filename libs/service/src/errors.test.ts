import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import {
  ERROR_CODE_METADATA_KEY,
  isCodedError,
  RemoteError,
  ServiceError,
  STATUS_BY_CODE,
  statusForCode,
  toGrpcError,
} from './errors.js';

class RegionError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

describe('error codes and gRPC status', () => {
  it('maps a coded error of any module through the one table', () => {
    const e = toGrpcError(
      new RegionError('REGION_NOT_FOUND', 'no region "x"; list them with vmctl region list'),
    );
    expect(e.code).toBe(grpc.status.NOT_FOUND);
    expect(e.details).toBe('no region "x"; list them with vmctl region list');
    expect(e.metadata?.get(ERROR_CODE_METADATA_KEY)).toEqual(['REGION_NOT_FOUND']);
  });

  it('normalises unknown throws to SERVICE_INTERNAL, keeping the message', () => {
    const e = toGrpcError(new TypeError('boom'));
    expect(e.code).toBe(grpc.status.INTERNAL);
    expect(e.details).toBe('internal error: boom');
    expect(toGrpcError('text').details).toBe('internal error: text');
  });

  it('does not take Node system error codes for Handoff codes', () => {
    const sys = Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
    expect(isCodedError(sys)).toBe(false);
    expect(ServiceError.from(sys).code).toBe('SERVICE_INTERNAL');
  });

  it('falls back to INTERNAL for a code missing from the table', () => {
    expect(statusForCode('NOPE_NOT_LISTED')).toBe(grpc.status.INTERNAL);
  });

  it('lists only well-formed codes', () => {
    for (const code of Object.keys(STATUS_BY_CODE))
      expect(code).toMatch(/^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$/);
  });

  it('recovers the stable code on the client side', () => {
    const metadata = new grpc.Metadata();
    metadata.set(ERROR_CODE_METADATA_KEY, 'LEASE_STALE_EPOCH');
    const r = RemoteError.fromGrpc(
      { code: grpc.status.ABORTED, details: 'stale', metadata },
      'transferLease',
    );
    expect(r.code).toBe('LEASE_STALE_EPOCH');
    expect(r.status).toBe(grpc.status.ABORTED);
    expect(r.message).toBe('transferLease: stale');
    const plain = RemoteError.fromGrpc({ code: grpc.status.UNAVAILABLE, details: 'down' });
    expect(plain.code).toBe('GRPC_UNAVAILABLE');
  });
});

describe('RemoteError messages', () => {
  it('drop the empty resolution note grpc-js appends to connection failures', () => {
    const r = RemoteError.fromGrpc({
      code: grpc.status.UNAVAILABLE,
      details:
        'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:7000. Resolution note: ',
    });
    expect(r.message).toBe(
      'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:7000',
    );
  });
});
