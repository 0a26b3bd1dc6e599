import { memstore as pb } from '@handoff/proto';
import {
  channelCredentials,
  createClient,
  RemoteError,
  unaryCall,
  type TlsMaterial,
} from '@handoff/service';
import * as grpc from '@grpc/grpc-js';
import { MemstoreError } from '../errors.js';
import type { SourceConnector } from '../lazy/source.js';

/** Deadline of a call to the source memstore. */
const CALL_DEADLINE_MS = 5000;

/**
 * A gRPC client of another memstore, presenting this memstore's own certificate (role memstore)
 * and accepting only a server certificate of a memstore; plaintext under `--insecure`. Its
 * errors are memstore errors: the source's own code when it sent one of ours, else
 * LAZY_SOURCE_UNAVAILABLE (it cannot be reached, or answered something this memstore does not
 * know).
 */
export function grpcSourceConnector(material: TlsMaterial | null): SourceConnector {
  return (address) => {
    const client = createClient(
      pb.MemstoreServiceClient,
      address,
      channelCredentials(material, { serverRole: 'memstore' }),
    );
    const call = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        throw sourceError(err, what, address);
      }
    };
    return {
      open: (req) =>
        call('OpenPageSource', async () => {
          const res = await unaryCall(
            client,
            'openPageSource',
            { regionId: req.regionId, identity: req.identity, size: BigInt(req.size) },
            { deadlineMs: CALL_DEADLINE_MS },
          );
          return { sourceId: res.sourceId, token: res.token, pageAddress: res.pageAddress };
        }),
      claim: (sourceId, epoch) =>
        call('ClaimPageSource', async () => {
          const res = await unaryCall(
            client,
            'claimPageSource',
            { sourceId, epoch: BigInt(epoch) },
            { deadlineMs: CALL_DEADLINE_MS },
          );
          return Number(res.epoch);
        }),
      close: (sourceId, complete) =>
        call('ClosePageSource', async () => {
          await unaryCall(
            client,
            'closePageSource',
            { sourceId, complete },
            { deadlineMs: CALL_DEADLINE_MS },
          );
        }),
      dispose: () => client.close(),
    };
  };
}

/** A failed call to the source memstore, as a memstore error of this one. */
export function sourceError(err: unknown, what: string, address: string): MemstoreError {
  const remote = err instanceof RemoteError ? err : RemoteError.fromGrpc(err, what);
  const unreachable =
    remote.status === grpc.status.UNAVAILABLE || remote.status === grpc.status.DEADLINE_EXCEEDED;
  if (!unreachable && MemstoreError.isCode(remote.code)) {
    return new MemstoreError(remote.code, `source memstore ${address}: ${remote.message}`, {
      cause: err,
    });
  }
  return new MemstoreError(
    'LAZY_SOURCE_UNAVAILABLE',
    `source memstore ${address} cannot be reached (${remote.code}: ${remote.message}); ` +
      'the fill waits: RecoverLazyRegion once it is back',
    { cause: err },
  );
}
