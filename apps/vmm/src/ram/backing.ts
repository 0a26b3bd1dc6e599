import type { PresentMap } from '@handoff/bitmap';
import type { memstore } from '@handoff/proto';
import type { LeaseContext } from '../leases/calls.js';
import type { RamBlockSpec, RegionRef, VmMemoryUsage } from '../model/types.js';

/** A region a bypass save sealed in place: from now on a snapshot's immutable memory. */
export interface SealedRegion {
  readonly regionId: string;
  readonly regionName: string;
  readonly identity: string;
}

/**
 * A RAM block's memory, mapped in this process: a SharedArrayBuffer the vCPU worker adopts
 * without a copy, plus what the block holds in memstore (a lease, a clone attachment, a region
 * it created). `close()` revokes the mapping first (stale views read zeros and can never write
 * the file again), then gives those back.
 */
export interface RamBacking {
  /** The spec with the region resolved (a created region's name filled in). */
  readonly spec: RamBlockSpec;
  readonly buffer: SharedArrayBuffer;
  /** The memstore region the block maps, or null for private memory. */
  readonly regionRef: RegionRef | null;
  /** True when the memory is known to start zero-filled (a new memfd or region). */
  readonly zeroed: boolean;
  /** Unmaps and releases; idempotent; never throws (failures are logged). */
  close(): Promise<void>;
  /**
   * Unmaps only, giving nothing back (the lease and region moved to a migration target with
   * the block); later `close()` calls do nothing.
   */
  abandon(): void;
  /**
   * Lazy blocks (post-copy, `lazy.ts`): the region's present map and how to ask for its pages.
   * The VM hands `presentBuffer` to its vCPU thread, which makes the block lazy.
   */
  readonly lazy?: LazyRam;
  /** Shared blocks: records the lease epoch after this VM re-took its own lease (fencing). */
  setLeaseEpoch?(epoch: number): void;
  /**
   * Byte ranges `[start, end)` of the block that may hold data, ascending (the data extents of
   * the backing file, `SEEK_DATA`/`SEEK_HOLE`); every byte outside them is zero for certain (a
   * hole). Null, or absent, when unknown: then any page may hold data. A snapshot: pages
   * written later are the dirty log's business.
   */
  dataRanges?(): readonly (readonly [start: number, end: number])[] | null;
  /**
   * Clone blocks: the byte ranges of the template file that may hold data, ascending; outside
   * them the template is zero. The block holds the template's bytes wherever the clone did not
   * write (the touched pages say where it did). Null when unknown.
   */
  templateDataRanges?(): readonly (readonly [start: number, end: number])[] | null;
  /**
   * Maps [offset, offset + length) into this process now (`MADV_POPULATE_WRITE`, or
   * `MADV_POPULATE_READ` for `'read'`): one system call instead of a page fault per page, when
   * the range is about to be filled (incoming migration) or read whole (outgoing). Only for
   * ranges that may hold data: populating a tmpfs hole allocates it. Byte offsets, whole pages.
   * Best effort: does nothing where unsupported.
   */
  prefault?(offset: number, length: number, access?: 'read' | 'write'): void;
  /**
   * Writes `data` at byte `offset` through the file (`pwrite` on a libuv worker thread), not
   * the mapping: the kernel fills the page cache without mapping a page into this process,
   * several times faster than a copy through fresh mapped pages (each first touch faults), and
   * the caller keeps receiving meanwhile. The mapping sees the bytes once it resolves; `data`
   * must not change until then. Writes that may overlap must be awaited in order. Only for
   * memory nothing runs on yet (an incoming migration's blocks).
   */
  write?(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Makes [offset, offset + length) zero by punching a hole in the file (frees the pages; no
   * page is touched). Byte offsets, whole pages.
   */
  zero?(offset: number, length: number): void;
  /**
   * Shared blocks, for a bypass save (only while the vCPU is paused): `'private'` maps the
   * region copy-on-write — the same file at the same address, nothing copied, the buffer and
   * the vCPU's views stay valid — so the file can be sealed while the guest runs on; `'shared'`
   * undoes it when the save failed (copies made meanwhile are dropped). The lease stays held.
   * The old mapping is not unmapped here (that drops the page-table entry of every page the
   * guest touched, ~50–75 µs per MiB): it is moved aside, where nothing can reach it, and
   * answered, for the caller to unmap once the guest runs again (null: the kernel could not
   * move it, and the remap dropped it itself).
   *
   * @throws ShmError from `@handoff/shm` (the mapping is unchanged)
   */
  remap?(sharing: 'shared' | 'private'): RetiredRam | null;
  /**
   * Shared blocks, once a bypass save sealed the region as a snapshot's memory (which released
   * the lease) while it was mapped private: the block carries on as `clone` RAM of that sealed
   * region over the same mapping (`backing`, at once), and the VM is attached to it as a clone,
   * which pins the snapshot (`attached`: the AttachClone call, which need not hold the guest
   * up; it never rejects — a failure is logged, as the mapping needs nothing from memstore to
   * stay valid). This backing is spent: its `close()` and `abandon()` do nothing (the lease is
   * gone, the region is the snapshot's).
   */
  becomeClone?(sealed: SealedRegion): {
    readonly backing: RamBacking;
    readonly attached: Promise<void>;
  };
  /**
   * What the block's mapping costs now (`/proc/self/smaps` over its address range); null once
   * closed. `privateDirty` counts the pages only this VM wrote: for clone RAM its copy-on-write
   * copies (the template's pages are the template's, however many map them).
   */
  memoryUsage?(): VmMemoryUsage | null;
}

/** What a lazy block's backing adds (see `lazy.ts`). */
export interface LazyRam {
  /** The host's view of the present map (read only). */
  readonly map: PresentMap;
  /** The present map's buffer, for the vCPU thread. */
  readonly presentBuffer: SharedArrayBuffer;
  /** FetchPages for the region: resolves once the pages are present. */
  readonly fetchPages: (first: number, count: number) => Promise<void>;
}

/** A block's old mapping a {@link RamBacking.remap} moved aside, waiting to be unmapped. */
export interface RetiredRam {
  /** Unmaps it off the JS thread; resolves once it is gone. Never rejects. */
  unmap(): Promise<void>;
}

/** What opening a block needs from the instance: memstore's lease calls, and its gRPC client. */
export interface RamContext extends LeaseContext {
  /** The memstore client (created on first use). */
  readonly memstore: () => memstore.MemstoreServiceClient;
}
