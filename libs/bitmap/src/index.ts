/**
 * `@handoff/bitmap` — page bitmaps for dirty tracking and presence, their dirty logs, and their
 * validated wire form. See README.md beside this package for the API tour, the wire layout and
 * the concurrency contracts.
 *
 * @packageDocumentation
 */

export { BITMAP_ERROR_CODES, BitmapError, isBitmapError, type BitmapErrorCode } from './errors.js';
export {
  MAX_BITS,
  PageBitmap,
  RunCursor,
  type PageBitmapStorage,
  type RunCallback,
} from './page-bitmap.js';
export { DirtyLog, NO_DIRTY_TRACKING, type DirtyMarker } from './dirty-log.js';
export { AtomicDirtyLog } from './atomic-dirty-log.js';
export {
  EpochDirtyLog,
  EpochDirtyWriter,
  MAX_EPOCH_WRITERS,
  type EpochDirtyLogOptions,
} from './epoch-dirty-log.js';
export {
  WIRE_HEADER_BYTES,
  WIRE_MAGIC,
  WIRE_SENTINEL,
  WIRE_SENTINEL_BYTES,
  WIRE_VERSION_MAJOR,
  WIRE_VERSION_MINOR,
  decode,
  decodeInto,
  encode,
  encodeInto,
  encodedByteLength,
  type DecodeOptions,
} from './wire.js';
export {
  PRESENT_HEADER_WORDS,
  PRESENT_MAGIC,
  PRESENT_VERSION_MAJOR,
  PRESENT_VERSION_MINOR,
  PresentMap,
  PresentState,
  presentMapBytes,
} from './present-map.js';
