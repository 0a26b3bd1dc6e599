/**
 * The data channel's raw page frame: a page frame whose run table is a small fixed-size header
 * and whose page bytes follow unencoded, so the source writes them straight from the guest
 * memory view and the target hands a view of the received bytes to the page receiver. Sent only
 * after the target's HeaderAck says format ≥ 1.{@link RAW_PAGES_MINOR} (PROTOCOL.md, "Raw page
 * frames"); the gRPC call keeps the protobuf `PageFrame`.
 *
 * Payload layout (inside the data channel's 4-byte length prefix), little-endian:
 *
 * | offset   | size   | field                                                        |
 * | -------- | ------ | ------------------------------------------------------------ |
 * | 0        | 1      | kind: {@link RAW_PAGES_KIND} (0; no protobuf message starts so) |
 * | 1        | 3      | reserved, zero                                               |
 * | 4        | 4      | run count `n`, 1 ..= MAX_FRAME_RUNS                          |
 * | 8        | 16 · n | runs: block, flags, first page, page count (u32 each)        |
 * | 8 + 16·n | rest   | the data of the non-zero runs, concatenated, whole pages     |
 *
 * @packageDocumentation
 */
import type { vmmStream } from '@handoff/proto';
import { MigrationError } from '../../model/migration-error.js';
import { MAX_FRAME_DATA, MAX_FRAME_RUNS } from '../pages/frames.js';

/** The first byte of a raw page frame's payload (a protobuf message never begins with 0). */
export const RAW_PAGES_KIND = 0;
/** The stream format minor from which a target takes raw page frames on its data channel. */
export const RAW_PAGES_MINOR = 3;
/** Bytes before the first run. */
const HEAD_BYTES = 8;
/** Bytes per run. */
const RUN_BYTES = 16;
/** The largest raw page frame's payload: the longest run table and 1 MiB of pages. */
export const MAX_RAW_PAGES_BYTES = HEAD_BYTES + RUN_BYTES * MAX_FRAME_RUNS + MAX_FRAME_DATA;

/** True when `payload` is a raw page frame (else a protobuf `IncomingRequest`). */
export function isRawPages(payload: Uint8Array): boolean {
  return payload.length > 0 && payload[0] === RAW_PAGES_KIND;
}

/**
 * Whether `frame` fits the raw form: every run's block, flags, first page and count below 2^32
 * (a block of 16 TiB and more travels as protobuf frames).
 */
export function fitsRawPages(frame: vmmStream.PageFrame): boolean {
  for (const r of frame.runs) {
    if (r.firstPage < 0n || r.firstPage > 0xffffffffn) return false;
    if (r.block > 0xffffffff || r.pageCount > 0xffffffff || r.flags > 0xffffffff) return false;
  }
  return true;
}

/**
 * The raw form of `frame` as two parts to be written back to back: the run table (fresh, small)
 * and the data itself (the frame's view of guest RAM, not copied). Call only when
 * {@link fitsRawPages}.
 */
export function encodeRawPages(frame: vmmStream.PageFrame): Uint8Array[] {
  const n = frame.runs.length;
  const head = Buffer.allocUnsafe(HEAD_BYTES + RUN_BYTES * n);
  head.writeUInt32LE(RAW_PAGES_KIND, 0); // kind 0, reserved bytes 0
  head.writeUInt32LE(n, 4);
  let at = HEAD_BYTES;
  for (const r of frame.runs) {
    head.writeUInt32LE(r.block >>> 0, at);
    head.writeUInt32LE(r.flags >>> 0, at + 4);
    head.writeUInt32LE(Number(r.firstPage), at + 8);
    head.writeUInt32LE(r.pageCount >>> 0, at + 12);
    at += RUN_BYTES;
  }
  return frame.data.length === 0 ? [head] : [head, frame.data];
}

/**
 * Reads a raw page frame: the runs, and the data as a view of `payload` (not copied). Checks the
 * framing only (kind, reserved bytes, run count, that the run table fits); the runs' blocks,
 * ranges, flags and the data length against them are `checkFrame`'s, as for a protobuf frame.
 *
 * @throws MigrationError `MIGRATION_BAD_STREAM` when the framing is broken
 */
export function decodeRawPages(payload: Uint8Array): vmmStream.PageFrame {
  const bad = (what: string): never => {
    throw new MigrationError('MIGRATION_BAD_STREAM', `raw page frame rejected: ${what}`);
  };
  if (payload.length < HEAD_BYTES) bad(`${payload.length} bytes, shorter than its header`);
  if (payload.length > MAX_RAW_PAGES_BYTES) {
    bad(`${payload.length} bytes (max ${MAX_RAW_PAGES_BYTES})`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.length);
  if (view.getUint8(0) !== RAW_PAGES_KIND || (view.getUint32(0, true) & 0xffffff00) !== 0) {
    bad('its kind or reserved bytes are not zero');
  }
  const n = view.getUint32(4, true);
  if (n === 0 || n > MAX_FRAME_RUNS) bad(`${n} runs (1 to ${MAX_FRAME_RUNS})`);
  const dataAt = HEAD_BYTES + RUN_BYTES * n;
  if (dataAt > payload.length)
    bad(`${n} runs need ${dataAt} bytes; the frame has ${payload.length}`);
  const runs = new Array<vmmStream.PageRun>(n);
  for (let k = 0, at = HEAD_BYTES; k < n; k++, at += RUN_BYTES) {
    runs[k] = {
      block: view.getUint32(at, true),
      flags: view.getUint32(at + 4, true),
      firstPage: BigInt(view.getUint32(at + 8, true)),
      pageCount: view.getUint32(at + 12, true),
    };
  }
  return { runs, data: payload.subarray(dataAt) };
}
