import type * as grpc from '@grpc/grpc-js';
import { status as grpcStatus } from '@grpc/grpc-js';
import type { memstore as pb } from '@handoff/proto';
import { anyEvent, toGrpcError, type Logger } from '@handoff/service';
import { MemstoreError } from '../errors.js';
import type { Memstore } from '../memstore.js';
import { exportedDataBytes } from '../snapshots/exporter.js';
import { exportSections } from '../snapshots/export-writer.js';
import type { SnapshotImport } from '../snapshots/importer.js';
import { snapshotRefFromPb, snapshotToPb } from './snapshot-convert.js';
import { MAX_CHUNK_BYTES } from './read-pages.js';

/**
 * ExportSnapshot and ImportSnapshot: a snapshot as one file streamed in chunks of at most
 * 1 MiB (the format: snapshots/FORMAT.md).
 */

type ExportCall = grpc.ServerWritableStream<pb.ExportSnapshotRequest, pb.ExportSnapshotResponse>;

/**
 * ExportSnapshot: the file in messages of exactly 1 MiB (the last one shorter), the first
 * carrying the total length. Honours backpressure (a `write()` returning false waits for
 * 'drain'; at most one section is read ahead) and stops reading when the client cancels.
 */
export async function exportSnapshot(m: Memstore, call: ExportCall, logger: Logger): Promise<void> {
  const plan = m.planExport(snapshotRefFromPb(call.request.snapshot));
  const stopped = (): boolean => call.cancelled || call.destroyed;
  let chunk = Buffer.allocUnsafe(MAX_CHUNK_BYTES);
  let used = 0;
  let first = true;
  const send = async (): Promise<void> => {
    const data = chunk.subarray(0, used);
    const more = call.write({ data, totalBytes: first ? BigInt(plan.totalBytes) : 0n });
    first = false;
    // The message keeps its buffer until it is serialised: the next chunk gets a new one.
    chunk = Buffer.allocUnsafe(MAX_CHUNK_BYTES);
    used = 0;
    if (!more) await anyEvent(call, ['drain', 'cancelled', 'close', 'error']);
  };
  for await (const section of exportSections(plan, stopped)) {
    for (let at = 0; at < section.length;) {
      const n = Math.min(section.length - at, MAX_CHUNK_BYTES - used);
      chunk.set(section.subarray(at, at + n), used);
      used += n;
      at += n;
      if (used === MAX_CHUNK_BYTES) await send();
      if (stopped()) return;
    }
  }
  if (used > 0) await send();
  logger.info(
    { name: plan.header.name, bytes: plan.totalBytes, dataBytes: exportedDataBytes(plan) },
    'snapshot exported',
  );
}

type ImportCall = grpc.ServerReadableStream<pb.ImportSnapshotRequest, pb.ImportSnapshotResponse>;

function importInvalid(message: string): MemstoreError {
  return new MemstoreError('SNAPSHOT_INVALID', message);
}

/**
 * ImportSnapshot: the first message names the snapshot, the rest carry the file's bytes in
 * order (read one message at a time, so a fast client waits for the disk). Whatever fails —
 * the file, the stream, the client going away — nothing is left behind.
 */
export async function importSnapshot(
  m: Memstore,
  call: ImportCall,
): Promise<pb.ImportSnapshotResponse> {
  let job: SnapshotImport | undefined;
  try {
    for await (const msg of call as AsyncIterable<pb.ImportSnapshotRequest>) {
      const part = msg.part;
      if (job === undefined) {
        if (part?.$case !== 'start') {
          throw importInvalid(
            'the first ImportSnapshot message must be `start` (the name to give the snapshot)',
          );
        }
        job = m.beginImport({ name: part.value.name, template: part.value.template });
        continue;
      }
      if (part?.$case !== 'data') {
        throw importInvalid('after `start`, every ImportSnapshot message must carry `data`');
      }
      if (part.value.length > MAX_CHUNK_BYTES) {
        throw importInvalid(
          `a data message holds ${part.value.length} bytes; send at most ${MAX_CHUNK_BYTES}`,
        );
      }
      await job.push(part.value);
    }
    if (job === undefined) throw importInvalid('the stream ended without a `start` message');
    if (call.cancelled) throw importInvalid('the client cancelled the import');
    return { snapshot: snapshotToPb(await job.finish()) };
  } catch (err) {
    await job?.abort();
    throw err;
  }
}

/** grpc-js adapter for a client-streaming handler, answering errors through the status table. */
export function clientStream<Req, Res>(
  logger: Logger,
  fn: (call: grpc.ServerReadableStream<Req, Res>) => Promise<Res>,
): grpc.handleClientStreamingCall<Req, Res> {
  return (call, callback) => {
    fn(call).then(
      (res) => callback(null, res),
      (err: unknown) => {
        const grpcErr = toGrpcError(err);
        const path = call.getPath();
        if (grpcErr.code === grpcStatus.INTERNAL || grpcErr.code === grpcStatus.UNKNOWN) {
          logger.error({ err, path }, 'call failed');
        } else {
          logger.info({ path, error: grpcErr.details }, 'call refused');
        }
        callback(grpcErr as grpc.ServiceError);
      },
    );
  };
}
