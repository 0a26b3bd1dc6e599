/**
 * The vmm's domain types. They hold no generated type: the protobuf edges (`api/convert.ts`
 * for the gRPC service, `wire/spec.ts` for a spec on either edge) convert to and from the wire.
 */

/**
 * How a RAM block is backed: `private` (memory of this vmm), `shared` (a memstore region mapped
 * shared; a migration with bypass-shared-memory hands it over by reference) or `clone` (a sealed
 * template mapped copy-on-write).
 */
export type RamBackendKind = 'private' | 'shared' | 'clone';

/** What the migrator's registry keeps of a hosted VM: where it runs is who reports it. */
export type HostedVm = Pick<VmInfo, 'name' | 'spec' | 'state'>;

/** One entry of a VM's RAM block table, as asked for. */
export interface RamBlockSpec {
  /** Unique in the VM; main RAM is `ram0`. */
  readonly id: string;
  /** Guest-physical base address. */
  readonly guestBase: number;
  /** Bytes; a multiple of 4 KiB. */
  readonly size: number;
  readonly backend: RamBackendKind;
  /**
   * `shared`: the memstore region to map ('' = create one named `<vm>-<block>`, owned by the
   * VM and deleted with it). `clone`: the sealed template. `private`: must be ''.
   */
  readonly region: string;
  /**
   * `shared` only, set by the vmm: the VM created `region` (its CreateVm spec named none) and
   * deletes it when it is destroyed, on whichever instance runs it by then (the flag travels
   * with the VM through a migration). Absent (or false): the region is kept.
   */
  readonly regionOwned?: boolean;
}

/** What CreateVm asks for. */
export interface VmSpec {
  readonly name: string;
  /** A built-in guest name or a path to an RV32 ELF (see `guests/catalog.ts`). */
  readonly guest: string;
  readonly ram: readonly RamBlockSpec[];
  /** Host arguments for the guest, readable through the control device as `key=value ...`. */
  readonly args: Readonly<Record<string, string>>;
}

/** Lifecycle states of a VM on this instance. */
export type VmState =
  | 'created'
  | 'running'
  | 'paused'
  | 'powered-off'
  | 'crashed'
  /** Source side after a completed outgoing migration: unmapped, never resumes. */
  | 'postmigrate';

/** A memstore region a block maps, as sent instead of its pages (bypass-shared-memory). */
export interface RegionRef {
  readonly regionId: string;
  readonly regionName: string;
  /** Lease epoch held (shared), 0 for a clone's template. */
  readonly epoch: number;
  readonly size: number;
  readonly identity: string;
  /** Address of the memstore that owns the region. */
  readonly memstore: string;
}

/** A RAM block of a live VM. */
export interface RamBlockInfo {
  /** The spec with the region name resolved (a created region's name filled in). */
  readonly spec: RamBlockSpec;
  /** Pages dirtied since the last harvest (approximate while the vCPU runs). */
  readonly dirtyPages: number;
  /** Pages written since boot; the others are known to be zero (or the template's). */
  readonly touchedPages: number;
  readonly regionRef: RegionRef | null;
}

/** A VM as GetVm / ListVms report it. */
export interface VmInfo {
  readonly name: string;
  readonly vmmId: string;
  readonly state: VmState;
  readonly spec: VmSpec;
  readonly ram: readonly RamBlockInfo[];
  /** Instructions retired since boot. */
  readonly instret: number;
  /** Million instructions per second over the last second (0 unless running). */
  readonly mips: number;
  /** The finisher's code once powered off (0 = pass). */
  readonly exitCode: number;
  /** Why the VM crashed, or ''. */
  readonly error: string;
  readonly createdAt: Date;
  readonly generationId: bigint;
  /** The guest rang the READY doorbell (its template point). */
  readonly ready: boolean;
  /** How long the last pause took from request to the vCPU's stop, in ms (null: never paused). */
  readonly lastPauseLatencyMs: number | null;
  /**
   * The snapshot the VM runs from: the one it was restored or cloned from, or the one a bypass
   * save sealed its memory into (it runs on copy-on-write over it); '' for a booted VM.
   */
  readonly snapshot: string;
  /** What its RAM mappings cost, when asked for (GetVm); absent otherwise. */
  readonly memory?: VmMemoryUsage;
  /** While its main RAM still arrives by post-copy: what is here and what the guest waits for. */
  readonly postcopy?: VmPostcopyInfo;
}

/** A VM whose main RAM is a lazy region not complete yet. */
export interface VmPostcopyInfo {
  readonly presentPages: number;
  readonly totalPages: number;
  /** The vCPU is parked on a missing page now (`pageWaited`). */
  readonly waiting: boolean;
  readonly pageWaited: number;
  /** The fill lost its source: the wait lasts until a recover (postcopy-paused). */
  readonly sourcePaused: boolean;
  readonly pagesWaited: number;
  readonly faultP50Us: number;
  readonly faultP99Us: number;
}

/** What a VM's RAM mappings cost, measured by the kernel (`/proc/self/smaps`), in bytes. */
export interface VmMemoryUsage {
  /** Proportional set size: each resident page divided by the number of mappings sharing it. */
  readonly pss: number;
  /** Pages only this VM holds that it wrote (copy-on-write copies, written private pages). */
  readonly privateDirty: number;
  /** Resident pages, counted whole even when shared. */
  readonly rss: number;
}

/** Lifecycle events, as WatchVm streams them. */
export type VmEventKind =
  'started' | 'paused' | 'resumed' | 'ready' | 'powered-off' | 'guest-error' | 'destroyed';

export interface VmEvent {
  readonly kind: VmEventKind;
  readonly at: Date;
  readonly vm: VmInfo;
  /** One line for people: exit code, error message, READY tag. */
  readonly detail: string;
}
