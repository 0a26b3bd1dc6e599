/**
 * Loading of the native addon and translation of its failures into {@link ShmError}s.
 *
 * The addon (`build/Release/handoff_shm.node`, built by node-gyp from `src/native/shm.cc` when
 * the workspace installs) is a thin layer over mmap and friends: it trusts this package for
 * argument validation, so nothing outside `src/` may call it.
 *
 * @internal
 * @packageDocumentation
 */
import { createRequire } from 'node:module';
import { getSystemErrorMap } from 'node:util';

import { ShmError, type ShmErrorCode } from './errors.js';

declare const nativeHandleBrand: unique symbol;

/** @internal Opaque owner handle of one native mapping (a napi External). */
export interface NativeHandle {
  readonly [nativeHandleBrand]: true;
}

declare const nativeRetiredBrand: unique symbol;

/** @internal Opaque handle of an old mapping a remap moved aside (a napi External). */
export interface NativeRetired {
  readonly [nativeRetiredBrand]: true;
}

/** @internal What `native.close` did. */
export type NativeCloseResult = 'unmapped' | 'revoked' | 'already-closed';

/** @internal The addon's exports (see src/native/shm.cc). */
export interface NativeBinding {
  readonly constants: {
    readonly pageSize: number;
    readonly unixPathMax: number;
    readonly advice: Readonly<Record<string, number>>;
    readonly seals: Readonly<Record<string, number>>;
    readonly flags: {
      readonly MS_SYNC: number;
      readonly MS_ASYNC: number;
      readonly MS_INVALIDATE: number;
      readonly MFD_CLOEXEC: number;
      readonly MFD_ALLOW_SEALING: number;
      readonly FALLOC_FL_KEEP_SIZE: number;
      readonly FALLOC_FL_PUNCH_HOLE: number;
    };
  };
  map(
    fd: number,
    offset: number,
    length: number,
    shared: boolean,
    populate: boolean,
    sharedBuffer: boolean,
  ): [NativeHandle, ArrayBuffer | SharedArrayBuffer, bigint];
  close(handle: NativeHandle): NativeCloseResult;
  remap(
    handle: NativeHandle,
    fd: number,
    offset: number,
    shared: boolean,
    deferUnmap: boolean,
  ): [result: 'remapped' | 'lost', retired: NativeRetired | null];
  unmapRetired(retired: NativeRetired): Promise<void>;
  retiredAddress(retired: NativeRetired): bigint | null;
  overlay(
    handle: NativeHandle,
    fd: number,
    offset: number,
    length: number,
    fileOffset: number,
  ): 'overlaid' | 'lost';
  overlayMany(
    handle: NativeHandle,
    fd: number,
    ranges: Float64Array,
  ): [done: number, errno: number, lost: boolean];
  madvise(handle: NativeHandle, offset: number, length: number, advice: number): void;
  msync(handle: NativeHandle, offset: number, length: number, flags: number): void;
  mincore(handle: NativeHandle, offset: number, length: number, out?: Uint8Array): number;
  memfdCreate(name: string, flags: number): number;
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  startWriteback(fd: number, offset: number, length: number): Promise<number>;
  addSeals(fd: number, seals: number): void;
  getSeals(fd: number): number;
  dataRanges(fd: number, offset: number, length: number): Float64Array;
  stats(): { regions: number; bytes: number };
  futexWait(
    buffer: ArrayBuffer | SharedArrayBuffer,
    offset: number,
    expected: number,
    timeoutMs: number,
  ): 'woken' | 'not-equal' | 'timed-out';
  futexWake(buffer: ArrayBuffer | SharedArrayBuffer, offset: number, count: number): number;
  futexWaitAny(
    buffers: readonly (ArrayBuffer | SharedArrayBuffer)[],
    offsets: readonly number[],
    expected: readonly number[],
    timeoutMs: number,
  ): number;
  atomicLoad32(buffer: ArrayBuffer | SharedArrayBuffer, offset: number): number;
  atomicStore32(buffer: ArrayBuffer | SharedArrayBuffer, offset: number, value: number): void;
  atomicCompareExchange32(
    buffer: ArrayBuffer | SharedArrayBuffer,
    offset: number,
    expected: number,
    desired: number,
  ): number;
  connectUnix(path: string, timeoutMs: number): number;
  setSocketTimeout(fd: number, timeoutMs: number): void;
  peerCredentials(fd: number): [pid: number, uid: number, gid: number];
}

/** @internal Path of the addon relative to this module (the same from `src/` and `dist/`). */
export const ADDON_PATH = '../build/Release/handoff_shm.node';

function load(): NativeBinding {
  try {
    return createRequire(import.meta.url)(ADDON_PATH) as NativeBinding;
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ShmError(
      'SHM_NATIVE_UNAVAILABLE',
      `@handoff/shm cannot load its native addon (${reason}); build it with ` +
        '`npm rebuild @handoff/shm` (needs python3, make and a C++17 compiler) using the same ' +
        `Node that runs it (${process.version}).`,
      { cause: err },
    );
  }
}

/** @internal The loaded addon. Loading happens once, when this package is imported. */
export const native: NativeBinding = load();

/** @internal A failed system call, from the addon or from `node:fs`. */
export interface KernelFailure {
  /** errno name, e.g. `'ENOENT'`. */
  readonly errno: string;
  /** Human text for the errno, e.g. `'no such file or directory'`. */
  readonly text: string;
  /** The system call. */
  readonly syscall: string;
}

const errnoTable = getSystemErrorMap();

/** @internal Recognise a failed system call; undefined for anything else. */
export function kernelFailure(err: unknown): KernelFailure | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { errno?: unknown; syscall?: unknown; code?: unknown };
  if (typeof e.errno !== 'number' || typeof e.syscall !== 'string') return undefined;
  // The addon reports a positive errno, node:fs a negative one.
  const entry = errnoTable.get(-Math.abs(e.errno));
  const name = entry?.[0] ?? (typeof e.code === 'string' ? e.code : `errno ${Math.abs(e.errno)}`);
  return { errno: name, text: entry?.[1] ?? 'unknown error', syscall: e.syscall };
}

/**
 * @internal How to report one errno of one operation: the error code and the advice that ends
 * the message. Return undefined to fall back to `fallback`.
 */
export type Classifier = (errno: string) => [ShmErrorCode, string] | undefined;

/**
 * @internal Turn anything thrown by the addon or `node:fs` into a {@link ShmError} whose message
 * names the operation, the target, the system call and the errno, and ends with advice.
 */
export function toShmError(
  what: string,
  err: unknown,
  classify: Classifier,
  fallback: [ShmErrorCode, string],
): ShmError {
  if (err instanceof ShmError) return err;
  const failure = kernelFailure(err);
  if (failure === undefined) {
    if (typeof err === 'object' && err !== null && (err as { closed?: unknown }).closed === true) {
      return new ShmError('SHM_CLOSED', `${what}: the mapping is closed; map the file again.`, {
        cause: err,
      });
    }
    return ShmError.from(err);
  }
  const [code, advice] = classify(failure.errno) ?? fallback;
  return new ShmError(
    code,
    `${what}: ${failure.syscall} failed with ${failure.errno} (${failure.text}); ${advice}`,
    { errno: failure.errno, syscall: failure.syscall, cause: err },
  );
}
