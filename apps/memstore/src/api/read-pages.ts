import type { ServerWritableStream } from '@grpc/grpc-js';
import type { memstore as pb } from '@handoff/proto';
import { anyEvent } from '@handoff/service';
import type { Memstore } from '../memstore.js';
import { checkPageRange, PageReader } from '../regions/page-reader.js';
import { findRegion } from '../regions/resolve.js';
import { PAGE_SIZE } from '../regions/size.js';
import { BufferPool } from './buffer-pool.js';
import { refFromPb } from './convert.js';

/** Largest payload of one ReadPagesResponse: page payloads travel in chunks of at most 1 MiB. */
export const MAX_CHUNK_BYTES = 1024 * 1024;
const CHUNK_PAGES = MAX_CHUNK_BYTES / PAGE_SIZE;
/** Messages that may be queued or in serialisation at once per stream. */
const BUFFERS_PER_STREAM = 4;

type Call = ServerWritableStream<pb.ReadPagesRequest, pb.ReadPagesResponse>;

/** Resolves on 'drain' or when the call ends in any way. */
function writable(call: Call): Promise<void> {
  return anyEvent(call, ['drain', 'cancelled', 'close', 'error']);
}

/**
 * ReadPages: streams the requested pages in chunks of at most 1 MiB (256
 * pages), bounds-checked against the region. Honours backpressure (a
 * `write()` returning false waits for 'drain'), reuses a few buffers per
 * stream, and stops reading as soon as the client cancels.
 */
export async function readPages(memstore: Memstore, call: Call): Promise<void> {
  const req = call.request;
  const row = findRegion(memstore.catalog, refFromPb(req.region));
  const range = checkPageRange(row, req.firstPage, req.pageCount);
  const reader = await PageReader.open(row.path);
  const pool = new BufferPool(MAX_CHUNK_BYTES, BUFFERS_PER_STREAM);
  const onCancel = (): void => pool.abort();
  call.on('cancelled', onCancel);
  try {
    const end = range.firstPage + range.pageCount;
    for (let page = range.firstPage; page < end && !call.cancelled; page += CHUNK_PAGES) {
      const buffer = await pool.acquire();
      if (buffer === undefined) break;
      const pages = Math.min(CHUNK_PAGES, end - page);
      const data = await reader.read(buffer, page, pages);
      if (call.cancelled) break;
      const more = call.write({ firstPage: BigInt(page), data }, () => pool.release(buffer));
      if (!more) await writable(call);
    }
  } finally {
    call.off('cancelled', onCancel);
    pool.abort();
    await reader.close();
  }
}
