/**
 * File and memfd mappings exposed as (Shared)ArrayBuffers.
 *
 * Contracts (see README.md for the long form):
 * - A {@link Mapping} owns one mmap'ed range. Its `buffer` is a view of the mapped memory itself:
 *   every read and write is a plain typed-array access, with no native call per access.
 * - {@link Mapping.close} releases the file at once and is idempotent. A `detachable` buffer is
 *   detached (its views read as empty) and the range unmapped; a `shared` buffer (the default)
 *   cannot be detached, so any views still alive keep a range of inert anonymous zero pages until
 *   they are garbage-collected: they never crash the process and never reach the file again.
 * - Dropping a mapping without `close()` is safe: the range is unmapped when the `Mapping` and
 *   every buffer over it (in every thread) have been garbage-collected.
 * - The file must not shrink below the mapped range while mapped: the kernel answers accesses
 *   past the end of a file with SIGBUS, which kills the process.
 *
 * @packageDocumentation
 */
import {
  closeSync,
  constants as fsConstants,
  fstatSync,
  ftruncateSync,
  openSync,
  unlinkSync,
} from 'node:fs';

import { ShmError, describe } from './errors.js';
import {
  native,
  toShmError,
  type Classifier,
  type NativeHandle,
  type NativeRetired,
} from './native.js';
import { readSmapsRange, type MemoryUsage } from './smaps.js';
import {
  PAGE_SIZE,
  checkChoice,
  checkFd,
  checkFlag,
  checkInteger,
  checkOptions,
  checkPageAligned,
  roundUpToPage,
} from './validate.js';

/**
 * How writes relate to the file.
 * - `'shared'` — `MAP_SHARED`: writes go to the file and are seen by every process mapping it.
 *   The file is opened read-write.
 * - `'private'` — `MAP_PRIVATE`: copy-on-write. The file is opened read-only and never changes;
 *   the first write to a page copies it into this process. Pages not yet written still show later
 *   changes others make to the file, so a template must never change once sealed.
 */
export type Sharing = 'shared' | 'private';

/**
 * Which kind of buffer exposes the mapping.
 * - `'shared'` (default) — a `SharedArrayBuffer`: can be posted to worker threads (they see the
 *   same memory, no remapping), supports `Atomics.wait/notify`, and is not counted as V8 external
 *   memory, so mapping gigabytes never triggers a garbage collection. Cannot be detached:
 *   `close()` revokes it instead (see {@link Mapping.close}).
 * - `'detachable'` — an `ArrayBuffer`: `close()` detaches it, so later use of stale views fails
 *   visibly (`byteLength` 0, methods throw). V8 counts it as external memory: mapping one starts
 *   GC work, ms-scale from about 64 MiB and a full GC at 1 GiB+. Use it for small mappings only.
 */
export type BufferKind = 'shared' | 'detachable';

/** Every kind of buffer a {@link Mapping} may expose. */
export type MappingBuffer = ArrayBuffer | SharedArrayBuffer;

/** Options of {@link mapFd} (and the mapping part of {@link mapFile}). */
export interface MapOptions {
  /** `'shared'` (default) or `'private'` (copy-on-write); see {@link Sharing}. */
  sharing?: Sharing;
  /** Where the mapping starts in the file, in bytes; a multiple of {@link PAGE_SIZE}. Default 0. */
  offset?: number;
  /**
   * Bytes to map. Default: from `offset` to the end of the file (after `size` is applied).
   * `offset + length` must not exceed the file size.
   */
  length?: number;
  /** `'shared'` (default, a SharedArrayBuffer) or `'detachable'`; see {@link BufferKind}. */
  bufferKind?: BufferKind;
  /**
   * Pre-fault the page tables (`MAP_POPULATE`) so first accesses do not fault. Shared mappings
   * only: on a private mapping it would copy every page. For a private mapping use
   * `advise('populate-read')`, which maps the file's pages without copying them.
   */
  populate?: boolean;
  /**
   * Shared mappings only: make the file this many bytes (`ftruncate`) before mapping. A shorter
   * file grows (new bytes read as zero); a longer file is an error, since shrinking a file that
   * others may map would crash them with SIGBUS.
   */
  size?: number;
  /**
   * Shared mappings only: reserve the mapped range now (`fallocate`), so running out of space
   * fails here with `SHM_NO_SPACE` instead of killing the process with SIGBUS on a later write.
   * On tmpfs this allocates (and zeroes) the pages up front, which costs time and memory.
   */
  allocate?: boolean;
}

/** Options of {@link mapFile}: {@link MapOptions} plus how to open (or create) the file. */
export interface MapFileOptions extends MapOptions {
  /** Shared mappings only: create the file if it does not exist (`O_CREAT`). Needs `size`. */
  create?: boolean;
  /** With `create`: fail with `SHM_ALREADY_EXISTS` if the file exists (`O_EXCL`). */
  exclusive?: boolean;
  /** Permission bits of a created file. Default `0o600`. */
  mode?: number;
}

/**
 * Names of `madvise(2)` advice, as supported by the running kernel's headers at build time
 * ({@link ADVICE} lists those available).
 * - `'dontneed'` drops this mapping's page-table entries: a private mapping loses its
 *   copy-on-write copies and reads the file again; a shared mapping loses nothing.
 * - `'remove'` frees the file's pages in the range (tmpfs/shmem, shared writable mappings only):
 *   the contents are gone for every mapper and read back as zeros.
 * - `'willneed'` starts read-ahead; `'populate-read'`/`'populate-write'` (Linux 5.14+) fault the
 *   range in now (`populate-write` on a private mapping copies every page).
 */
export type Advice =
  | 'normal'
  | 'random'
  | 'sequential'
  | 'willneed'
  | 'dontneed'
  | 'free'
  | 'remove'
  | 'dontfork'
  | 'dofork'
  | 'hugepage'
  | 'nohugepage'
  | 'dontdump'
  | 'dodump'
  | 'cold'
  | 'pageout'
  | 'populate-read'
  | 'populate-write';

const ALL_ADVICE: readonly Advice[] = [
  'normal',
  'random',
  'sequential',
  'willneed',
  'dontneed',
  'free',
  'remove',
  'dontfork',
  'dofork',
  'hugepage',
  'nohugepage',
  'dontdump',
  'dodump',
  'cold',
  'pageout',
  'populate-read',
  'populate-write',
];

/** The {@link Advice} names this build of the addon supports. */
export const ADVICE: readonly Advice[] = Object.freeze(
  ALL_ADVICE.filter((a) => native.constants.advice[a] !== undefined),
);

/** Options of {@link Mapping.sync}. */
export interface SyncOptions {
  /** Schedule the write-back and return at once (`MS_ASYNC`) instead of waiting (`MS_SYNC`). */
  async?: boolean;
  /** Also invalidate other mappings of the same file (`MS_INVALIDATE`). */
  invalidate?: boolean;
}

/** Options of {@link Mapping.remap}. */
export interface RemapOptions {
  /**
   * An open fd of the mapped file: required for a mapping made with {@link mapFd}, optional for
   * one made with {@link mapFile} (whose path is opened again otherwise). It must be open
   * read-write to remap `'shared'`. It stays the caller's.
   */
  fd?: number;
  /**
   * Take the cost of dropping the old mapping's pages off the remap: its page tables are first
   * moved to a fresh address range (one `mremap(MREMAP_DONTUNMAP)`; whole page-table pages
   * move, so it takes microseconds however many pages were touched), the range is then
   * replaced with nothing mapped in it, and the old mapping lives on, unreachable through any
   * buffer, until {@link RetiredMapping.unmap} (or the garbage collector) unmaps it. The remap
   * then answers that {@link RetiredMapping}, or null where the kernel cannot move page tables
   * (before Linux 5.13): the remap was then done the plain way.
   */
  deferUnmap?: boolean;
}

/**
 * The old mapping a {@link Mapping.remap} with `deferUnmap` moved aside: the same pages of the
 * same file at another address, which no buffer points at. Unmapping it drops the page-table
 * entry of every page the old mapping had mapped, which takes time in proportion to them; that
 * is why it is left for later.
 */
export interface RetiredMapping {
  /** Where the old mapping is now, or null once unmapped. */
  readonly address: bigint | null;
  /** Its length in bytes (the mapping's span, whole pages). */
  readonly length: number;
  /**
   * Unmaps it on a libuv worker thread; resolves once it is gone (it no longer appears in
   * `/proc/self/maps`). Calling it again does nothing more. Never rejects.
   */
  unmap(): Promise<void>;
}

/** Options of {@link Mapping.overlay}. */
export interface OverlayOptions {
  /** Where the range starts in the overlaid file, page-aligned; default: `offset` (the same place). */
  fileOffset?: number;
}

/** @internal Which file a mapping maps (device and inode), and its path when mapped by path. */
export interface MappedFile {
  readonly dev: number;
  readonly ino: number;
  readonly path: string | null;
}

/** @internal What {@link Mapping} is built from. */
export interface MappingInit {
  readonly handle: NativeHandle;
  readonly buffer: MappingBuffer;
  readonly address: bigint;
  readonly length: number;
  readonly fileOffset: number;
  readonly sharing: Sharing;
  readonly bufferKind: BufferKind;
  readonly source: string;
  readonly file: MappedFile;
}

const SHARINGS: readonly Sharing[] = ['shared', 'private'];
const BUFFER_KINDS: readonly BufferKind[] = ['shared', 'detachable'];

/**
 * One memory mapping of a file or memfd, owned by this object.
 *
 * Create it with {@link mapFile} or {@link mapFd}; release it with {@link Mapping.close}. The
 * object is used from the thread that created it; hand {@link Mapping.buffer} (a
 * SharedArrayBuffer by default) to worker threads instead.
 *
 * @typeParam B - `SharedArrayBuffer` (bufferKind `'shared'`) or `ArrayBuffer` (`'detachable'`)
 */
export class Mapping<B extends MappingBuffer = SharedArrayBuffer> {
  /** Bytes mapped; the length of {@link Mapping.buffer}. */
  readonly length: number;
  /** Where the mapping starts in the file, in bytes. */
  readonly fileOffset: number;
  /** `'shared'` or `'detachable'`; see {@link BufferKind}. */
  readonly bufferKind: BufferKind;
  /**
   * Virtual address of the first byte in this process, for diagnostics and for matching
   * `/proc/<pid>/smaps` (see {@link Mapping.usage}). Never dereference it.
   */
  readonly address: bigint;
  /** What was mapped (`/dev/shm/x` or `fd 12`), for messages. */
  readonly source: string;

  #handle: NativeHandle | undefined;
  #buffer: B | undefined;
  #sharing: Sharing;
  readonly #file: MappedFile;
  /** Ranges of other files mapped over this one ({@link Mapping.overlay}). */
  #overlays = 0;

  /** @internal Use {@link mapFile} or {@link mapFd}. */
  constructor(init: MappingInit) {
    this.#handle = init.handle;
    this.#buffer = init.buffer as B;
    this.address = init.address;
    this.length = init.length;
    this.fileOffset = init.fileOffset;
    this.#sharing = init.sharing;
    this.bufferKind = init.bufferKind;
    this.source = init.source;
    this.#file = init.file;
  }

  /** `'shared'` or `'private'` (see {@link Sharing}); changes with {@link Mapping.remap}. */
  get sharing(): Sharing {
    return this.#sharing;
  }

  /** True once {@link Mapping.close} ran. */
  get closed(): boolean {
    return this.#handle === undefined;
  }

  /**
   * The mapped memory. Keep typed-array views of it rather than calling this per access.
   *
   * @throws ShmError `SHM_CLOSED` after {@link Mapping.close}
   */
  get buffer(): B {
    if (this.#buffer === undefined) this.#throwClosed('buffer');
    return this.#buffer;
  }

  /**
   * A `Uint8Array` view of [offset, offset + length) of the mapping.
   *
   * @throws ShmError `SHM_CLOSED`, `SHM_OUT_OF_RANGE`, `SHM_INVALID_ARGUMENT`
   */
  bytes(offset = 0, length?: number): Uint8Array<B> {
    const [off, len] = this.#range('bytes', offset, length);
    return new Uint8Array(this.buffer, off, len);
  }

  /**
   * Give the kernel advice about [offset, offset + length) (`madvise(2)`).
   *
   * `offset` must be a multiple of {@link PAGE_SIZE}; `length` too unless the range reaches the
   * end of the mapping (the kernel applies advice to whole pages, so a partial last page would
   * silently extend the range).
   *
   * @param advice - see {@link Advice}
   * @param offset - bytes from the start of the mapping; default 0
   * @param length - bytes; default to the end of the mapping
   * @throws ShmError `SHM_CLOSED`, `SHM_OUT_OF_RANGE`, `SHM_INVALID_ARGUMENT`, `SHM_UNSUPPORTED`
   *   (e.g. `'remove'` on a private mapping or a file system without hole punching)
   */
  advise(advice: Advice, offset = 0, length?: number): void {
    const op = `advise(${describe(advice)})`;
    const value = typeof advice === 'string' ? native.constants.advice[advice] : undefined;
    if (value === undefined || !(ALL_ADVICE as readonly string[]).includes(advice)) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${op}: unknown or unsupported advice; this build supports ${ADVICE.join(', ')}.`,
      );
    }
    const [off, len] = this.#range(op, offset, length);
    checkPageAligned(op, 'offset', off);
    if (len % PAGE_SIZE !== 0 && off + len !== this.length) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${op}: length ${len} is not a multiple of the page size (${PAGE_SIZE}) and does not ` +
          `reach the end of the mapping; the kernel would apply the advice to the whole last ` +
          `page. Pass whole pages.`,
      );
    }
    if (len === 0) return;
    try {
      native.madvise(this.#live(op), off, len, value);
    } catch (err) {
      throw toShmError(`${op} on ${this.source}`, err, classifyMadvise(advice, this.sharing), [
        'SHM_SYSCALL_FAILED',
        'check the kernel log; the mapping is unchanged.',
      ]);
    }
  }

  /**
   * Write dirty pages of a shared mapping back to the file (`msync(2)`); for tmpfs files this is
   * nearly free, for files on disk it is what makes a save durable.
   *
   * @param offset - bytes from the start of the mapping, a multiple of {@link PAGE_SIZE}; default 0
   * @param length - bytes; default to the end of the mapping
   * @param options - {@link SyncOptions}
   */
  sync(offset = 0, length?: number, options?: SyncOptions): void {
    const op = 'sync';
    const [off, len] = this.#range(op, offset, length);
    checkPageAligned(op, 'offset', off);
    const opts = checkOptions(op, options);
    const flags = native.constants.flags;
    let bits = checkFlag(op, 'async', opts.async) ? flags.MS_ASYNC : flags.MS_SYNC;
    if (checkFlag(op, 'invalidate', opts.invalidate)) bits |= flags.MS_INVALIDATE;
    if (len === 0) return;
    try {
      native.msync(this.#live(op), off, len, bits);
    } catch (err) {
      throw toShmError(`${op} of ${this.source}`, err, classifyIo, [
        'SHM_SYSCALL_FAILED',
        'the data may not be on disk; check the file system and retry.',
      ]);
    }
  }

  /**
   * How many pages of [offset, offset + length) are resident (`mincore(2)`).
   *
   * For file pages this is residency in the page cache (a page another process faulted in
   * counts), not whether this process touched it; use {@link Mapping.usage} for this process's
   * RSS/PSS. For a private mapping, copied pages count as resident.
   *
   * @param offset - bytes from the start of the mapping, a multiple of {@link PAGE_SIZE}; default 0
   * @param length - bytes; default to the end of the mapping
   */
  residentPages(offset = 0, length?: number): number {
    const op = 'residentPages';
    const [off, len] = this.#range(op, offset, length);
    checkPageAligned(op, 'offset', off);
    if (len === 0) return 0;
    try {
      return native.mincore(this.#live(op), off, len);
    } catch (err) {
      throw toShmError(`${op} of ${this.source}`, err, () => undefined, [
        'SHM_SYSCALL_FAILED',
        'the mapping is unchanged.',
      ]);
    }
  }

  /**
   * Per-page residency of [offset, offset + length): one byte per page, 1 if resident, else 0
   * (`mincore(2)`; see {@link Mapping.residentPages} for what "resident" means).
   *
   * @param offset - bytes from the start of the mapping, a multiple of {@link PAGE_SIZE}; default 0
   * @param length - bytes; default to the end of the mapping
   * @param out - optional array to fill (reuse it to avoid allocating); at least one byte per page
   * @returns `out` (or a new array) trimmed to one byte per page
   */
  residency(offset = 0, length?: number, out?: Uint8Array): Uint8Array {
    const op = 'residency';
    const [off, len] = this.#range(op, offset, length);
    checkPageAligned(op, 'offset', off);
    const pages = Math.ceil(len / PAGE_SIZE);
    let vec: Uint8Array;
    if (out === undefined) {
      vec = new Uint8Array(pages);
    } else if (!(out instanceof Uint8Array) || out.length < pages) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${op}: out must be a Uint8Array of at least ${pages} bytes (one per page), got ` +
          `${out instanceof Uint8Array ? `${out.length} bytes` : describe(out)}.`,
      );
    } else {
      vec = out.subarray(0, pages);
    }
    if (len === 0) return vec;
    try {
      native.mincore(this.#live(op), off, len, vec);
    } catch (err) {
      throw toShmError(`${op} of ${this.source}`, err, () => undefined, [
        'SHM_SYSCALL_FAILED',
        'the mapping is unchanged.',
      ]);
    }
    return vec;
  }

  /**
   * This process's memory for this mapping (RSS, PSS, private/shared clean/dirty, in bytes), from
   * `/proc/self/smaps`. For a clone (private mapping of a template), `anonymous` is what it has
   * copied on write and `pss` its fair share of the rest. (`privateDirty` is not the copies:
   * tmpfs pages are always dirty, so template pages mapped by one process only count there too.)
   */
  usage(): MemoryUsage {
    this.#live('usage');
    return readSmapsRange(this.address, roundUpToPage(this.length));
  }

  /**
   * Map the same file range again with other sharing, at the same address: one
   * `mmap(MAP_FIXED)` replaces the pages, so {@link Mapping.buffer} and every view of it (in any
   * thread) stay valid and keep pointing at this memory. Nothing is copied.
   *
   * - `'shared'` → `'private'`: the content is the file's, identical to what the shared mapping
   *   showed (its writes are in the file); later writes are copy-on-write and never reach the
   *   file. A page not yet written still shows later changes others make to the file.
   * - `'private'` → `'shared'`: writes reach the file again; copy-on-write copies made since
   *   the private remap are dropped (those pages show the file again).
   *
   * Remapping to the current sharing does nothing. Nothing may access the range while it is
   * remapped (a vCPU is paused meanwhile): an access at that instant may see either mapping.
   * The kernel drops the page-table entries of every page the old mapping had mapped, so a
   * remap takes time in proportion to the pages touched (about 50–75 µs per MiB); with
   * `options.deferUnmap` that cost moves to {@link RetiredMapping.unmap}, which the answer
   * returns (null without the option, or where the kernel cannot move page tables).
   * The file is found again by the path it was mapped by (or `options.fd`), and must be the
   * same file (device and inode) and still cover the range.
   *
   * @throws ShmError `SHM_CLOSED`; `SHM_INVALID_ARGUMENT` (another file is at the path now, or a
   *   mapping made with {@link mapFd} was given no fd); `SHM_NOT_FOUND`, `SHM_PERMISSION_DENIED`
   *   (a `'shared'` remap needs the file writable), `SHM_OUT_OF_RANGE` (the file shrank); on
   *   any of these the mapping is unchanged. `SHM_MAP_FAILED` when the kernel failed midway:
   *   the mapping is then closed (its views read zeros, as after {@link Mapping.close}).
   */
  remap(sharing: Sharing, options?: RemapOptions): RetiredMapping | null {
    const op = `remap(${describe(sharing)})`;
    const handle = this.#live(op);
    if (sharing === undefined) checkChoice(op, 'sharing', null, SHARINGS, 'shared');
    checkChoice(op, 'sharing', sharing, SHARINGS, 'shared');
    const o = checkOptions(op, options);
    const given = o.fd === undefined ? undefined : checkFd(op, o.fd);
    if (o.deferUnmap !== undefined && typeof o.deferUnmap !== 'boolean') {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${op}: options.deferUnmap must be a boolean, got ${describe(o.deferUnmap)}.`,
      );
    }
    if (sharing === this.#sharing) return null;
    const what = `${op} of ${this.source}`;
    if (this.#overlays > 0) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${what}: ranges of other files are overlaid on this mapping, which a remap of the ` +
          'whole range would drop; the mapping is unchanged. Map the files again instead.',
      );
    }
    let fd = given;
    if (fd === undefined) {
      const path = this.#file.path;
      if (path === null) {
        throw new ShmError(
          'SHM_INVALID_ARGUMENT',
          `${what}: a mapping made with mapFd needs the file again; pass options.fd.`,
        );
      }
      try {
        fd = openSync(path, sharing === 'shared' ? fsConstants.O_RDWR : fsConstants.O_RDONLY);
      } catch (err) {
        throw toShmError(what, err, classifyOpen(false), [
          'SHM_OPEN_FAILED',
          'check the path and its permissions; the mapping is unchanged.',
        ]);
      }
    }
    try {
      this.#checkSameFile(what, fd);
      let result: 'remapped' | 'lost';
      let retired: NativeRetired | null;
      try {
        [result, retired] = native.remap(
          handle,
          fd,
          this.fileOffset,
          sharing === 'shared',
          o.deferUnmap === true,
        );
      } catch (err) {
        throw toShmError(what, err, classifyMmap, [
          'SHM_MAP_FAILED',
          'the mapping is unchanged; check the file and the process limits.',
        ]);
      }
      if (result === 'lost') {
        this.close();
        throw new ShmError(
          'SHM_MAP_FAILED',
          `${what}: the kernel failed after it had unmapped the range; the mapping is closed ` +
            '(its views read zeros). Map the file again.',
        );
      }
      this.#sharing = sharing;
      return retired === null ? null : retiredMapping(retired, roundUpToPage(this.length));
    } finally {
      if (given === undefined) closeSync(fd);
    }
  }

  /**
   * Map a range of another file over part of this mapping, copy-on-write: one
   * `mmap(MAP_FIXED | MAP_PRIVATE)` replaces [offset, offset + length) of the range with
   * [fileOffset, fileOffset + length) of `file`, read-write, its writes never reaching that file
   * (as in a `'private'` mapping). {@link Mapping.buffer} and every view of it, in any thread,
   * stay valid and show the overlaid file's pages there from then on; the rest of the mapping
   * is unchanged. Copy-on-write copies made in the range before are dropped. A clone of a
   * layered snapshot maps its root whole, then each layer's pages over it this way.
   *
   * Only a `'private'` mapping takes overlays, and it cannot be {@link Mapping.remap}ped after
   * one (that would drop them). Each overlay is a mapping of its own in the kernel (adjacent
   * ones of one file at matching offsets merge), counted against `vm.max_map_count`. Nothing
   * may access the range during the call (pause the vCPU).
   *
   * @param file - a path (opened read-only for the call) or an open fd (stays the caller's)
   * @param offset - where the range starts in this mapping, page-aligned
   * @param length - bytes, a multiple of the page size unless the range ends where the mapping
   *   does
   * @throws ShmError `SHM_CLOSED`; `SHM_INVALID_ARGUMENT` (a shared mapping, bad arguments, not a
   *   regular file); `SHM_OUT_OF_RANGE` (outside the mapping, or past the end of the file: an
   *   access there would be a SIGBUS); `SHM_NOT_FOUND`, `SHM_PERMISSION_DENIED`; on any of these
   *   the mapping is unchanged. `SHM_MAP_FAILED` when the kernel failed midway: the mapping is
   *   then closed (its views read zeros, as after {@link Mapping.close}).
   */
  overlay(file: string | number, offset: number, length: number, options?: OverlayOptions): void {
    const op = 'overlay';
    const handle = this.#live(op);
    const o = checkOptions(op, options);
    this.#checkOverlayRange(op, offset, length);
    const fileOffset =
      o.fileOffset === undefined ? offset : checkInteger(op, 'fileOffset', o.fileOffset, 0);
    checkPageAligned(op, 'fileOffset', fileOffset);
    this.#withOverlayFile(op, file, `[${offset}, ${offset + length})`, (fd, what) => {
      checkCovers(what, fd, fileOffset, length);
      let result: 'overlaid' | 'lost';
      try {
        result = native.overlay(handle, fd, offset, length, fileOffset);
      } catch (err) {
        throw toShmError(what, err, classifyMmap, [
          'SHM_MAP_FAILED',
          'the mapping is unchanged; check the file and the process limits (vm.max_map_count).',
        ]);
      }
      if (result === 'lost') this.#lostInOverlay(what);
      this.#overlays++;
    });
  }

  /**
   * {@link Mapping.overlay} of many ranges of one file, each at the same offset in the file as
   * in the mapping, in one call into the addon (one open and one `fstat` of the file, one mmap
   * per range): a clone maps each layer's runs of pages this way. `ranges` are `[offset,
   * length]` pairs with the rules of {@link Mapping.overlay}; all are checked before any is
   * mapped.
   *
   * @throws ShmError as {@link Mapping.overlay}; should the kernel refuse a range midway
   *   (`SHM_MAP_FAILED`, `SHM_PERMISSION_DENIED`, ...), the ranges before it stay overlaid and
   *   the message says how many: close the mapping.
   */
  overlayRanges(
    file: string | number,
    ranges: readonly (readonly [offset: number, length: number])[],
  ): void {
    const op = 'overlayRanges';
    const handle = this.#live(op);
    if (!Array.isArray(ranges)) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${op}: ranges ${describe(ranges)} is not an array of [offset, length] pairs; pass one.`,
      );
    }
    if (ranges.length === 0) return;
    const flat = new Float64Array(ranges.length * 2);
    let end = 0;
    ranges.forEach((r, k) => {
      if (!Array.isArray(r) || r.length !== 2) {
        throw new ShmError(
          'SHM_INVALID_ARGUMENT',
          `${op}: range ${k} is ${describe(r)}, not an [offset, length] pair; pass one.`,
        );
      }
      this.#checkOverlayRange(`${op}: range ${k}`, r[0], r[1]);
      flat[2 * k] = r[0];
      flat[2 * k + 1] = r[1];
      end = Math.max(end, r[0] + r[1]);
    });
    this.#withOverlayFile(op, file, `${ranges.length} ranges`, (fd, what) => {
      checkCovers(what, fd, 0, end);
      const [done, errno, lost] = native.overlayMany(handle, fd, flat);
      this.#overlays += done;
      if (lost) this.#lostInOverlay(what);
      if (errno !== 0) {
        const [offset, length] = ranges[done]!;
        throw toShmError(
          `${what}: range ${done} [${offset}, ${offset + length})`,
          { errno, syscall: 'mmap' },
          classifyMmap,
          [
            'SHM_MAP_FAILED',
            `the ${done} ranges before it are overlaid; close the mapping (check the process limits, vm.max_map_count).`,
          ],
        );
      }
    });
  }

  /** The checks of one overlay range: page-aligned, in the mapping, whole pages. */
  #checkOverlayRange(op: string, offset: unknown, length: unknown): void {
    const off = checkInteger(op, 'offset', offset, 0);
    checkPageAligned(op, 'offset', off);
    const len = checkInteger(op, 'length', length, 1);
    if (off + len > this.length) {
      throw new ShmError(
        'SHM_OUT_OF_RANGE',
        `${op}: range [${off}, ${off + len}) is outside the ${this.length}-byte mapping ` +
          `of ${this.source}; pass 0 <= offset < offset + length <= ${this.length}.`,
      );
    }
    if (len % PAGE_SIZE !== 0 && off + len !== this.length) checkPageAligned(op, 'length', len);
  }

  /** Checks the mapping takes overlays, opens `file` (a path) for `fn`, and closes it again. */
  #withOverlayFile(
    op: string,
    file: string | number,
    where: string,
    fn: (fd: number, what: string) => void,
  ): void {
    if (this.#sharing !== 'private') {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${op} of ${this.source}: the mapping is shared; only a private (copy-on-write) mapping ` +
          "takes overlays. Map the file with sharing: 'private'.",
      );
    }
    if (typeof file === 'number') {
      checkFd(op, file);
      fn(file, `${op} of fd ${file} at ${where} of ${this.source}`);
      return;
    }
    if (typeof file !== 'string' || file.length === 0 || file.includes('\0')) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${op}: file ${describe(file)} is neither a path nor an fd; pass one.`,
      );
    }
    const what = `${op} of ${file} at ${where} of ${this.source}`;
    let fd: number;
    try {
      fd = openSync(file, fsConstants.O_RDONLY);
    } catch (err) {
      throw toShmError(what, err, classifyOpen(false), [
        'SHM_OPEN_FAILED',
        'check the path and its permissions; the mapping is unchanged.',
      ]);
    }
    try {
      fn(fd, what);
    } finally {
      closeSync(fd);
    }
  }

  /** The kernel unmapped part of the range and failed: the range reads zeros now. */
  #lostInOverlay(what: string): never {
    this.close();
    throw new ShmError(
      'SHM_MAP_FAILED',
      `${what}: the kernel failed after it had unmapped the range; the mapping is closed ` +
        '(its views read zeros). Map the files again.',
    );
  }

  /** Throws unless `fd` is the file this maps and still covers the mapped range. */
  #checkSameFile(what: string, fd: number): void {
    let stat;
    try {
      stat = fstatSync(fd);
    } catch (err) {
      throw toShmError(what, err, () => undefined, ['SHM_INVALID_ARGUMENT', 'pass an open fd.']);
    }
    if (stat.dev !== this.#file.dev || stat.ino !== this.#file.ino) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${what}: that is not the file this mapping maps (it was replaced or removed since); ` +
          'the mapping is unchanged.',
      );
    }
    if (stat.size < this.fileOffset + this.length) {
      throw new ShmError(
        'SHM_OUT_OF_RANGE',
        `${what}: the file is ${stat.size} bytes now, shorter than the mapped range ` +
          `[${this.fileOffset}, ${this.fileOffset + this.length}); the mapping is unchanged.`,
      );
    }
  }

  /**
   * Release the mapping. Idempotent: a second call does nothing.
   *
   * - `detachable` buffer: the buffer is detached (byteLength 0; views read as empty, their
   *   methods throw) and the range is unmapped.
   * - `shared` buffer, or a detachable one another thread still holds: the file pages are replaced
   *   in one step by anonymous zero pages, so the file is released now and stale views neither
   *   crash the process nor reach the file (they read zeros; their writes are discarded with the
   *   range). The range is unmapped when the last buffer over it is garbage-collected, in any
   *   thread.
   *
   * Afterwards {@link Mapping.buffer} and every method throw `SHM_CLOSED`.
   */
  close(): void {
    const handle = this.#handle;
    if (handle === undefined) return;
    this.#handle = undefined;
    this.#buffer = undefined;
    try {
      native.close(handle);
    } catch (err) {
      throw toShmError(`close of ${this.source}`, err, () => undefined, [
        'SHM_SYSCALL_FAILED',
        'the file stays mapped until every buffer over it is garbage-collected.',
      ]);
    }
  }

  #live(op: string): NativeHandle {
    if (this.#handle === undefined) this.#throwClosed(op);
    return this.#handle;
  }

  #throwClosed(op: string): never {
    throw new ShmError(
      'SHM_CLOSED',
      `${op}: the mapping of ${this.source} is closed; map the file again to use it.`,
    );
  }

  /** Check [offset, offset + length) lies in the mapping; default length: to the end. */
  #range(op: string, offset: unknown, length: unknown): [number, number] {
    this.#live(op);
    if (typeof offset !== 'number' || !Number.isInteger(offset)) {
      checkInteger(op, 'offset', offset, 0);
    }
    const off = offset as number;
    if (off < 0 || off > this.length) {
      throw new ShmError(
        'SHM_OUT_OF_RANGE',
        `${op}: offset ${off} is outside the ${this.length}-byte mapping of ${this.source}; ` +
          `pass 0 <= offset <= ${this.length}.`,
      );
    }
    if (length === undefined) return [off, this.length - off];
    if (typeof length !== 'number' || !Number.isInteger(length)) {
      checkInteger(op, 'length', length, 0);
    }
    const len = length as number;
    if (len < 0 || off + len > this.length) {
      throw new ShmError(
        'SHM_OUT_OF_RANGE',
        `${op}: range [${off}, ${off + len}) is outside the ${this.length}-byte mapping of ` +
          `${this.source}; pass 0 <= offset <= offset + length <= ${this.length}.`,
      );
    }
    return [off, len];
  }
}

/** Throws unless `fd` is a regular file holding [offset, offset + length) (no SIGBUS there). */
function checkCovers(what: string, fd: number, offset: number, length: number): void {
  let stat;
  try {
    stat = fstatSync(fd);
  } catch (err) {
    throw toShmError(what, err, () => undefined, ['SHM_INVALID_ARGUMENT', 'pass an open fd.']);
  }
  if (!stat.isFile()) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${what}: not a regular file; the mapping is unchanged.`,
    );
  }
  if (stat.size < offset + length) {
    throw new ShmError(
      'SHM_OUT_OF_RANGE',
      `${what}: the ${stat.size}-byte file does not hold [${offset}, ${offset + length}); ` +
        'accesses there would kill the process with SIGBUS. The mapping is unchanged.',
    );
  }
}

function classifyMadvise(advice: string, sharing: Sharing): Classifier {
  return (errno) => {
    if (advice === 'remove' && sharing === 'private') {
      // The kernel says EACCES (or EINVAL on older kernels): REMOVE needs a shared writable vma.
      return [
        'SHM_UNSUPPORTED',
        `'remove' frees file pages and needs a shared mapping; use 'dontneed' to drop a ` +
          `private mapping's copies.`,
      ];
    }
    if (errno === 'EINVAL' || errno === 'EOPNOTSUPP' || errno === 'ENOSYS') {
      return [
        'SHM_UNSUPPORTED',
        `the kernel or file system does not support '${advice}' on this ${sharing} mapping.`,
      ];
    }
    if (errno === 'EACCES' || errno === 'EPERM') {
      return ['SHM_PERMISSION_DENIED', `'${advice}' needs write access to the file.`];
    }
    if (errno === 'ENOMEM') {
      return ['SHM_SYSCALL_FAILED', 'out of memory, or the range is not fully mapped.'];
    }
    return undefined;
  };
}

const classifyIo: Classifier = (errno) => {
  if (errno === 'ENOSPC' || errno === 'EDQUOT' || errno === 'EFBIG') {
    return ['SHM_NO_SPACE', 'free space on the file system holding the file, then retry.'];
  }
  return undefined;
};

const classifyOpen =
  (create: boolean): Classifier =>
  (errno) => {
    switch (errno) {
      case 'ENOENT':
        return [
          'SHM_NOT_FOUND',
          create
            ? 'its directory does not exist; create the directory first.'
            : 'check the path, or pass create: true (with size) to create a shared region.',
        ];
      case 'EEXIST':
        return [
          'SHM_ALREADY_EXISTS',
          'another region uses this path; pick a new name or map it without exclusive.',
        ];
      case 'EACCES':
      case 'EPERM':
      case 'EROFS':
      case 'ETXTBSY':
        return [
          'SHM_PERMISSION_DENIED',
          'a shared mapping needs read-write access; check the file mode, or map it with ' +
            "sharing: 'private' (read-only open, copy-on-write).",
        ];
      default:
        return undefined;
    }
  };

const classifyResize: Classifier = (errno) => {
  if (errno === 'ENOSPC' || errno === 'EDQUOT' || errno === 'EFBIG' || errno === 'ENOMEM') {
    return [
      'SHM_NO_SPACE',
      'free space (for /dev/shm: memory or the tmpfs size limit) or use a smaller size.',
    ];
  }
  if (errno === 'EPERM' || errno === 'EACCES' || errno === 'EINVAL' || errno === 'EBADF') {
    return [
      'SHM_PERMISSION_DENIED',
      'the file must be open for writing and not sealed against growing (F_SEAL_GROW).',
    ];
  }
  if (errno === 'EOPNOTSUPP' || errno === 'ENOSYS' || errno === 'ENODEV') {
    return ['SHM_UNSUPPORTED', 'the file system does not support it; drop the option.'];
  }
  return undefined;
};

const classifyMmap: Classifier = (errno) => {
  switch (errno) {
    case 'EACCES':
      return [
        'SHM_PERMISSION_DENIED',
        "a shared mapping needs an fd open for reading and writing; use sharing: 'private' for " +
          'a read-only fd.',
      ];
    case 'EPERM':
      return [
        'SHM_PERMISSION_DENIED',
        "the file is sealed against writing (F_SEAL_WRITE); map it with sharing: 'private'.",
      ];
    case 'ENODEV':
      return ['SHM_UNSUPPORTED', 'this file system does not support mmap.'];
    case 'ENOMEM':
      return [
        'SHM_MAP_FAILED',
        'out of address space or over vm.max_map_count; close unused mappings.',
      ];
    default:
      return undefined;
  }
};

/** Options checked once, shared by mapFile and mapFd. */
interface Checked {
  readonly sharing: Sharing;
  readonly bufferKind: BufferKind;
  readonly offset: number;
  readonly length: number | undefined;
  readonly populate: boolean;
  readonly size: number | undefined;
  readonly allocate: boolean;
}

function checkMapOptions(op: string, options: MapOptions | undefined): Checked {
  const o = checkOptions(op, options);
  const sharing = checkChoice(op, 'sharing', o.sharing, SHARINGS, 'shared');
  const bufferKind = checkChoice(op, 'bufferKind', o.bufferKind, BUFFER_KINDS, 'shared');
  const offset = o.offset === undefined ? 0 : checkInteger(op, 'offset', o.offset, 0);
  checkPageAligned(op, 'offset', offset);
  const length = o.length === undefined ? undefined : checkInteger(op, 'length', o.length, 1);
  const populate = checkFlag(op, 'populate', o.populate);
  const size = o.size === undefined ? undefined : checkInteger(op, 'size', o.size, 1);
  const allocate = checkFlag(op, 'allocate', o.allocate);
  if (sharing === 'private') {
    const bad = (['size', 'allocate', 'populate'] as const).filter((k) => o[k] !== undefined);
    if (bad.length > 0) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${op}: ${bad.join(', ')} cannot be used with sharing 'private': a private mapping never ` +
          `changes its file, and populating it would copy every page. Size the file through a ` +
          `shared mapping first; use advise('populate-read') to pre-fault a private mapping.`,
      );
    }
  }
  return { sharing, bufferKind, offset, length, populate, size, allocate };
}

/**
 * Size, allocate and map an open fd; the fd stays open and owned by the caller. `path`: the
 * file's path when it was opened by path (a remap opens it again), else null.
 */
function mapOpenFd(
  op: string,
  fd: number,
  source: string,
  path: string | null,
  c: Checked,
): Mapping<MappingBuffer> {
  const what = `${op}(${source})`;
  let fileSize: number;
  let identity: { dev: number; ino: number };
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${what}: not a regular file; map a file on tmpfs (/dev/shm), a memfd, or a file on disk.`,
      );
    }
    fileSize = stat.size;
    identity = { dev: stat.dev, ino: stat.ino };
  } catch (err) {
    throw toShmError(
      what,
      err,
      (errno) =>
        errno === 'EBADF'
          ? ['SHM_INVALID_ARGUMENT', `fd ${fd} is not open; pass an open file descriptor.`]
          : undefined,
      ['SHM_OPEN_FAILED', 'check the file.'],
    );
  }

  if (c.size !== undefined && c.size !== fileSize) {
    if (c.size < fileSize) {
      throw new ShmError(
        'SHM_INVALID_ARGUMENT',
        `${what}: the file is ${fileSize} bytes, larger than size ${c.size}; mapping never ` +
          `shrinks a file (other mappers would crash with SIGBUS). Omit size or remove the file.`,
      );
    }
    try {
      ftruncateSync(fd, c.size);
    } catch (err) {
      throw toShmError(`${what}: growing to ${c.size} bytes`, err, classifyResize, [
        'SHM_SYSCALL_FAILED',
        'the file keeps its old size.',
      ]);
    }
    fileSize = c.size;
  }

  if (c.offset >= fileSize) {
    throw new ShmError(
      'SHM_OUT_OF_RANGE',
      fileSize === 0
        ? `${what}: the file is empty; pass size to grow it (shared mappings) or map another file.`
        : `${what}: offset ${c.offset} is at or past the end of the ${fileSize}-byte file.`,
    );
  }
  const length = c.length ?? fileSize - c.offset;
  if (c.offset + length > fileSize) {
    throw new ShmError(
      'SHM_OUT_OF_RANGE',
      `${what}: [${c.offset}, ${c.offset + length}) reaches past the end of the ${fileSize}-byte ` +
        `file; accesses there would kill the process with SIGBUS. Grow the file (size) or map less.`,
    );
  }

  if (c.allocate) {
    try {
      native.fallocate(fd, 0, c.offset, length);
    } catch (err) {
      throw toShmError(`${what}: reserving ${length} bytes`, err, classifyResize, [
        'SHM_SYSCALL_FAILED',
        'drop allocate or check the file system.',
      ]);
    }
  }

  let handle: NativeHandle;
  let buffer: MappingBuffer;
  let address: bigint;
  try {
    [handle, buffer, address] = native.map(
      fd,
      c.offset,
      length,
      c.sharing === 'shared',
      c.populate,
      c.bufferKind === 'shared',
    );
  } catch (err) {
    throw toShmError(what, err, classifyMmap, [
      'SHM_MAP_FAILED',
      'check the file and the process limits (ulimit -v, vm.max_map_count).',
    ]);
  }
  return new Mapping<MappingBuffer>({
    handle,
    buffer,
    address,
    length,
    fileOffset: c.offset,
    sharing: c.sharing,
    bufferKind: c.bufferKind,
    source,
    file: { ...identity, path },
  });
}

/**
 * Map a file by path.
 *
 * Shared mappings open the file read-write (optionally creating and sizing it); private mappings
 * open it read-only and map it copy-on-write, so the file never changes. The file descriptor is
 * closed before returning; the mapping keeps the file alive (it may be unlinked meanwhile).
 *
 * @example
 * ```ts
 * // a memstore region
 * const region = mapFile('/dev/shm/handoff-r1', { create: true, size: 64 << 20 });
 * // a clone of a template
 * const clone = mapFile('/dev/shm/handoff-t1', { sharing: 'private' });
 * const ram = new Uint8Array(clone.buffer);
 * ```
 *
 * @throws ShmError `SHM_INVALID_ARGUMENT`, `SHM_NOT_FOUND`, `SHM_ALREADY_EXISTS`,
 *   `SHM_PERMISSION_DENIED`, `SHM_NO_SPACE`, `SHM_OUT_OF_RANGE`, `SHM_OPEN_FAILED`,
 *   `SHM_MAP_FAILED`, `SHM_UNSUPPORTED`
 */
export function mapFile(
  path: string,
  options: MapFileOptions & { bufferKind: 'detachable' },
): Mapping<ArrayBuffer>;
export function mapFile(
  path: string,
  options?: MapFileOptions & { bufferKind?: 'shared' },
): Mapping<SharedArrayBuffer>;
export function mapFile(path: string, options?: MapFileOptions): Mapping<MappingBuffer>;
export function mapFile(path: string, options?: MapFileOptions): Mapping<MappingBuffer> {
  const op = 'mapFile';
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}: path ${describe(path)} is not a usable file path; pass a non-empty string.`,
    );
  }
  const c = checkMapOptions(op, options);
  const o = checkOptions(op, options);
  const create = checkFlag(op, 'create', o.create);
  const exclusive = checkFlag(op, 'exclusive', o.exclusive);
  const mode = o.mode === undefined ? 0o600 : checkInteger(op, 'mode', o.mode, 0, 0o7777);
  if (c.sharing === 'private' && (create || exclusive)) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}(${path}): create/exclusive cannot be used with sharing 'private'; a private ` +
        'mapping opens an existing file read-only.',
    );
  }
  if (exclusive && !create) {
    throw new ShmError('SHM_INVALID_ARGUMENT', `${op}(${path}): exclusive needs create: true.`);
  }
  if (create && c.size === undefined) {
    throw new ShmError(
      'SHM_INVALID_ARGUMENT',
      `${op}(${path}): create needs size, or a new file would be empty and unmappable.`,
    );
  }

  let flags = c.sharing === 'shared' ? fsConstants.O_RDWR : fsConstants.O_RDONLY;
  if (create) flags |= fsConstants.O_CREAT;
  if (exclusive) flags |= fsConstants.O_EXCL;
  let fd: number;
  try {
    fd = openSync(path, flags, mode);
  } catch (err) {
    throw toShmError(`${op}(${path})`, err, classifyOpen(create), [
      'SHM_OPEN_FAILED',
      'check the path and its permissions.',
    ]);
  }
  try {
    return mapOpenFd(op, fd, path, path, c);
  } catch (err) {
    // A file this call created exclusively is ours to remove again.
    if (exclusive) {
      try {
        unlinkSync(path);
      } catch {
        // already gone; nothing to undo
      }
    }
    throw err;
  } finally {
    closeSync(fd);
  }
}

/**
 * Map an open file descriptor (a memfd from {@link createMemfd}, or any regular file).
 *
 * The fd stays owned by the caller, who may close it right after mapping; the mapping keeps the
 * file alive. A shared mapping needs an fd open for reading and writing.
 *
 * @throws ShmError see {@link mapFile}
 */
export function mapFd(
  fd: number,
  options: MapOptions & { bufferKind: 'detachable' },
): Mapping<ArrayBuffer>;
export function mapFd(
  fd: number,
  options?: MapOptions & { bufferKind?: 'shared' },
): Mapping<SharedArrayBuffer>;
export function mapFd(fd: number, options?: MapOptions): Mapping<MappingBuffer>;
export function mapFd(fd: number, options?: MapOptions): Mapping<MappingBuffer> {
  const op = 'mapFd';
  checkFd(op, fd);
  const c = checkMapOptions(op, options);
  return mapOpenFd(op, fd, `fd ${fd}`, null, c);
}

/**
 * Address ranges this process still has mapped through this package (all threads): closed
 * mappings whose buffers are not yet garbage-collected still count. For leak checks in tests and
 * for diagnostics.
 */
export function mappingStats(): { regions: number; bytes: number } {
  return native.stats();
}

/** The {@link RetiredMapping} over a native handle of a range a remap moved aside. */
function retiredMapping(handle: NativeRetired, length: number): RetiredMapping {
  let unmapped: Promise<void> | null = null;
  return {
    get address() {
      return native.retiredAddress(handle);
    },
    length,
    unmap: () => (unmapped ??= native.unmapRetired(handle).catch(() => undefined)),
  };
}
