/**
 * `@handoff/shm` — memory mappings for Handoff: file and memfd mappings (`MAP_SHARED` or
 * copy-on-write `MAP_PRIVATE`) exposed as SharedArrayBuffers (or detachable ArrayBuffers),
 * madvise/msync/mincore, memfd sealing, RSS/PSS readers from `/proc`, cross-process futexes and
 * atomics on mapped words, blocking unix sockets for worker threads, and the credentials of a unix
 * socket's peer.
 *
 * Guest RAM is touched only through typed-array views of {@link Mapping.buffer}; nothing on the
 * access path calls into native code. See README.md for ownership, `close()` and GC behaviour.
 *
 * @packageDocumentation
 */
export {
  SHM_ERROR_CODES,
  ShmError,
  isShmError,
  type ShmErrorCode,
  type ShmErrorOptions,
} from './errors.js';
export { PAGE_SIZE } from './validate.js';
export {
  ADVICE,
  Mapping,
  mapFd,
  mapFile,
  mappingStats,
  type Advice,
  type BufferKind,
  type MapFileOptions,
  type MapOptions,
  type MappingBuffer,
  type OverlayOptions,
  type RemapOptions,
  type RetiredMapping,
  type Sharing,
  type SyncOptions,
} from './mapping.js';
export {
  MEMFD_NAME_MAX,
  addSeals,
  createMemfd,
  fallocate,
  getSeals,
  type FallocateOptions,
  type MemfdOptions,
  type Seal,
} from './memfd.js';
export { dataRanges, fileDataRanges, type ByteRange } from './data-ranges.js';
export {
  readSmapsRange,
  readSmapsRollup,
  readSmapsRollupAsync,
  type MemoryUsage,
  type ProcessRef,
} from './smaps.js';
export {
  FUTEX_MAX_TIMEOUT_MS,
  FUTEX_WAIT_ANY_MAX,
  atomicCompareExchange32,
  atomicLoad32,
  atomicStore32,
  futexWait,
  futexWaitAny,
  futexWake,
  type FutexWaitResult,
  type FutexWord,
} from './futex.js';
export { startWriteback } from './writeback.js';
export {
  SOCKET_MAX_TIMEOUT_MS,
  UNIX_PATH_MAX,
  connectUnixBlocking,
  readExactSync,
  setSocketTimeout,
  writeAllSync,
} from './blocking-socket.js';
export { peerCredentials, type PeerCredentials } from './peer-credentials.js';
