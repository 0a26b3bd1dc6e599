import { memstore as pb, serviceNames } from '@handoff/proto';
import {
  ANY_ROLE,
  callerOf,
  requireRole,
  ServiceError,
  serverStream,
  unary,
  type AccessTable,
  type HasAuthContext,
  type Logger,
  type ServiceRegistration,
} from '@handoff/service';
import { dateToTimestamp } from '@handoff/proto';
import { MemstoreError } from '../errors.js';
import { assertMayMove, assertOwnHolder, type LeaseCaller } from '../leases/ownership.js';
import type { Memstore } from '../memstore.js';
import { leaseCallerOf } from './caller.js';
import {
  fencedToPb,
  infoToPb,
  kindFromPb,
  leaseToPb,
  refFromPb,
  regionToPb,
  remoteRegionFromPb,
  safeNumber,
} from './convert.js';
import { INSECURE_READER } from '../lazy/page-sources.js';
import type { RegionRef } from '../regions/region.js';
import { readPages } from './read-pages.js';
import {
  chainToPb,
  newSnapshotFromPb,
  snapshotRefFromPb,
  snapshotToPb,
} from './snapshot-convert.js';
import { clientStream, exportSnapshot, importSnapshot } from './snapshot-transfer.js';

/**
 * Runs a handler body against an open memstore and normalises what it
 * throws (SQLite and file-system errors become memstore codes).
 */
export async function guarded<T>(
  memstore: Memstore,
  what: string,
  fn: () => T | Promise<T>,
): Promise<T> {
  if (!memstore.isOpen) {
    throw new ServiceError(
      'SERVICE_SHUTTING_DOWN',
      'memstore is shutting down; retry against a running memstore',
    );
  }
  try {
    return await fn();
  } catch (err) {
    throw MemstoreError.from(err, what);
  }
}

/**
 * The lease calls, one function per method, wire types in and out: what the gRPC handlers and
 * the lease channel (lease-channel.ts) both run, so the two paths cannot drift apart (same
 * checks, same errors). `caller` is the vmm the caller is known to be (a channel connection's
 * session, a gRPC certificate), which may move leases only for its own holders. Run them
 * through {@link guarded}.
 */
export const leaseCalls = {
  getRegion: (m: Memstore, req: pb.GetRegionRequest): pb.GetRegionResponse => ({
    region: regionOf(m, refFromPb(req.region)),
  }),

  transferLease: (
    m: Memstore,
    req: pb.TransferLeaseRequest,
    caller: LeaseCaller,
  ): pb.TransferLeaseResponse => {
    assertMayMove(caller, req.fromHolder, req.toHolder, 'TransferLease');
    return {
      lease: leaseToPb(
        m.leases.transfer(
          refFromPb(req.region),
          req.fromHolder,
          safeNumber(req.expectedEpoch, 'expected_epoch'),
          req.toHolder,
        ),
      ),
    };
  },

  validateLease: (m: Memstore, req: pb.ValidateLeaseRequest): pb.ValidateLeaseResponse => {
    const v = m.leases.validate(refFromPb(req.region), req.holder, safeNumber(req.epoch, 'epoch'));
    return { valid: v.valid, current: leaseToPb(v.current) };
  },

  armTransfer: (
    m: Memstore,
    req: pb.ArmTransferRequest,
    caller: LeaseCaller,
  ): pb.ArmTransferResponse => {
    assertMayMove(caller, req.fromHolder, req.toHolder, 'ArmTransfer');
    const a = m.leases.arm(
      refFromPb(req.region),
      req.fromHolder,
      safeNumber(req.expectedEpoch, 'expected_epoch'),
      req.toHolder,
    );
    return {
      armsPath: a.armsPath,
      slotOffset: a.slotOffset,
      armedWord: a.armedWord,
      flippedWord: a.flippedWord,
      epoch: BigInt(a.epoch),
    };
  },

  resolveTransfer: (m: Memstore, req: pb.ResolveTransferRequest): pb.ResolveTransferResponse => ({
    lease: leaseToPb(m.leases.resolve(refFromPb(req.region))),
  }),

  startLazyFill: async (
    m: Memstore,
    req: pb.StartLazyFillRequest,
  ): Promise<pb.StartLazyFillResponse> => {
    const id = await m.lazy.startFill(refFromPb(req.region));
    return { region: regionOf(m, { id }) };
  },

  fetchPages: async (m: Memstore, req: pb.FetchPagesRequest): Promise<pb.FetchPagesResponse> => {
    const waited = await m.lazy.fetch(
      refFromPb(req.region),
      safeNumber(req.firstPage, 'first_page'),
      req.pageCount,
    );
    return { waitedUs: BigInt(waited) };
  },
} as const;

/** A region as GetRegion reports it, with its fill when it is lazy. */
function regionOf(m: Memstore, ref: RegionRef): pb.Region {
  const r = m.regions.get(ref);
  return regionToPb(r, m.lazy.status(r.id));
}

/** The reading memstore a page-source call comes from: its certificate's id (role memstore). */
function readerOf(c: HasAuthContext): string {
  const caller = callerOf(c);
  return caller?.secure === true ? caller.identity.id : INSECURE_READER;
}

/** Lazy regions (target host) and page sources (source host): LAZY.md. */
function lazyHandlers(
  m: Memstore,
  call: GuardedCall,
): Pick<
  pb.MemstoreServiceServer,
  | 'createLazyRegion'
  | 'startLazyFill'
  | 'recoverLazyRegion'
  | 'openPageSource'
  | 'claimPageSource'
  | 'closePageSource'
> {
  return {
    createLazyRegion: call('CreateLazyRegion', async (req: pb.CreateLazyRegionRequest) => {
      const maxBytesPerSecond = Number(req.maxBytesPerSecond ?? 0n);
      if (!Number.isSafeInteger(maxBytesPerSecond)) {
        throw new MemstoreError(
          'REGION_INVALID_ARGUMENT',
          `max_bytes_per_second ${String(req.maxBytesPerSecond)} is beyond 2^53; use 0 for no limit`,
        );
      }
      const id = await m.lazy.create({
        name: req.name,
        kind: kindFromPb(req.kind, 'volatile'),
        source: remoteRegionFromPb(req.source),
        maxBytesPerSecond,
      });
      return { region: regionOf(m, { id }) };
    }),
    startLazyFill: call('StartLazyFill', (req: pb.StartLazyFillRequest) =>
      leaseCalls.startLazyFill(m, req),
    ),
    recoverLazyRegion: call('RecoverLazyRegion', async (req: pb.RecoverLazyRegionRequest) => {
      const id = await m.lazy.recover(refFromPb(req.region), req.sourceMemstore);
      return { region: regionOf(m, { id }) };
    }),
    openPageSource: call('OpenPageSource', (req: pb.OpenPageSourceRequest, c) =>
      m.pageSources.open(readerOf(c), {
        regionId: req.regionId,
        identity: req.identity,
        size: safeNumber(req.size, 'size'),
      }),
    ),
    claimPageSource: call('ClaimPageSource', (req: pb.ClaimPageSourceRequest, c) => ({
      epoch: BigInt(m.pageSources.claim(readerOf(c), req.sourceId, safeNumber(req.epoch, 'epoch'))),
    })),
    closePageSource: call('ClosePageSource', (req: pb.ClosePageSourceRequest, c) => {
      m.pageSources.close(readerOf(c), req.sourceId, req.complete);
      return {};
    }),
  };
}

/**
 * Who may call what (roles of the caller's certificate; startServer enforces it). Regions are
 * managed by operators, vmms and the migrator; leases move only between vmms (a migration's
 * target takes them from its source), so no operator or migrator can take a running VM's
 * memory; templates and clones are the vmm's and the migrator's; pages are read by vmms and,
 * for post-copy, other memstores.
 */
export const MEMSTORE_ACCESS: AccessTable = {
  GetInfo: ANY_ROLE,
  CreateRegion: ['operator', 'vmm', 'migrator'],
  GetRegion: ['operator', 'vmm', 'migrator'],
  ListRegions: ['operator', 'vmm', 'migrator'],
  DeleteRegion: ['operator', 'vmm', 'migrator'],
  AcquireLease: ['vmm'],
  TransferLease: ['vmm'],
  ReleaseLease: ['vmm'],
  ValidateLease: ['vmm'],
  ArmTransfer: ['vmm'],
  ResolveTransfer: ['vmm'],
  SealTemplate: ['vmm', 'migrator'],
  AttachClone: ['vmm', 'migrator'],
  DetachClone: ['vmm', 'migrator'],
  ReadPages: ['vmm', 'memstore'],
  // A vmm opens the lease-holder session of its own process; an operator fences a dead holder.
  OpenLeaseSession: ['vmm'],
  ForceReleaseLease: ['operator'],
  // A vmm makes snapshots of its VMs; everyone who manages VMs reads and deletes them.
  CreateSnapshot: ['vmm'],
  GetSnapshot: ['operator', 'vmm', 'migrator'],
  ListSnapshots: ['operator', 'vmm', 'migrator'],
  DeleteSnapshot: ['operator', 'migrator'],
  FlattenSnapshot: ['operator', 'migrator'],
  ExportSnapshot: ['operator'],
  ImportSnapshot: ['operator'],
  CreateLazyRegion: ['operator', 'vmm', 'migrator'],
  StartLazyFill: ['vmm', 'migrator'],
  RecoverLazyRegion: ['operator', 'migrator'],
  OpenPageSource: ['memstore'],
  ClaimPageSource: ['memstore'],
  ClosePageSource: ['memstore'],
};

/** The gRPC edge of the memstore: converts wire types and delegates to the domain. */
export function memstoreService(deps: {
  memstore: Memstore;
  logger: Logger;
  /** The lease channel's socket path GetInfo reports ('' or absent: not served). */
  leaseChannel?: string;
}): ServiceRegistration {
  const { memstore: m, logger } = deps;
  const call = <Req, Res>(what: string, fn: (req: Req, c: HasAuthContext) => Res | Promise<Res>) =>
    unary<Req, Res>(logger, (req, c) => guarded(m, what, () => fn(req, c)));
  /** The vmm a call's certificate names (role vmm), whose own holders it may act for. */
  const leaseCaller = (c: HasAuthContext): LeaseCaller => leaseCallerOf(callerOf(c));

  const implementation: pb.MemstoreServiceServer = {
    getInfo: call('GetInfo', () => infoToPb(m.info(), deps.leaseChannel ?? '')),

    createRegion: call('CreateRegion', (req: pb.CreateRegionRequest) => ({
      region: regionToPb(
        m.regions.create({
          name: req.name,
          size: req.size,
          kind: kindFromPb(req.kind, 'volatile'),
        }),
      ),
    })),

    getRegion: call('GetRegion', (req: pb.GetRegionRequest) => leaseCalls.getRegion(m, req)),

    listRegions: call('ListRegions', (req: pb.ListRegionsRequest) => ({
      regions: m.regions
        .list(kindFromPb(req.kind, undefined))
        .map((r) => regionToPb(r, m.lazy.status(r.id))),
    })),

    deleteRegion: call('DeleteRegion', (req: pb.DeleteRegionRequest) => {
      // A lazy region's fill stops and its source is closed too (lazy-regions.ts).
      m.lazy.delete(refFromPb(req.region));
      return {};
    }),

    acquireLease: call('AcquireLease', (req: pb.AcquireLeaseRequest, c) => {
      assertOwnHolder(leaseCaller(c), req.holder, 'AcquireLease');
      return { lease: leaseToPb(m.leases.acquire(refFromPb(req.region), req.holder)) };
    }),

    transferLease: call('TransferLease', (req: pb.TransferLeaseRequest, c) =>
      leaseCalls.transferLease(m, req, leaseCaller(c)),
    ),

    releaseLease: call('ReleaseLease', (req: pb.ReleaseLeaseRequest, c) => {
      assertOwnHolder(leaseCaller(c), req.holder, 'ReleaseLease');
      m.leases.release(refFromPb(req.region), req.holder, safeNumber(req.epoch, 'epoch'));
      return {};
    }),

    validateLease: call('ValidateLease', (req: pb.ValidateLeaseRequest) =>
      leaseCalls.validateLease(m, req),
    ),

    armTransfer: call('ArmTransfer', (req: pb.ArmTransferRequest, c) =>
      leaseCalls.armTransfer(m, req, leaseCaller(c)),
    ),

    resolveTransfer: call('ResolveTransfer', (req: pb.ResolveTransferRequest) =>
      leaseCalls.resolveTransfer(m, req),
    ),

    sealTemplate: call('SealTemplate', async (req: pb.SealTemplateRequest) => {
      const lease =
        req.holder === ''
          ? undefined
          : { holder: req.holder, epoch: safeNumber(req.epoch, 'epoch') };
      return { region: regionToPb(await m.templates.seal(refFromPb(req.region), lease)) };
    }),

    attachClone: call('AttachClone', (req: pb.AttachCloneRequest) => {
      const attached = m.templates.attachCloneChain(
        refFromPb(req.template, 'template'),
        req.holder,
      );
      return { template: regionToPb(attached.template), layers: attached.chain.map(chainToPb) };
    }),

    detachClone: call('DetachClone', (req: pb.DetachCloneRequest) => {
      m.templates.detachClone(refFromPb(req.template, 'template'), req.holder);
      return {};
    }),

    openLeaseSession: call('OpenLeaseSession', (req: pb.OpenLeaseSessionRequest, c) => {
      const caller = callerOf(c);
      requireRole(caller, ['vmm'], 'OpenLeaseSession');
      let vmmId = req.vmmId;
      if (caller?.secure === true) {
        // Over TLS the certificate says who the vmm is; the request may only repeat it.
        if (vmmId !== '' && vmmId !== caller.identity.id) {
          throw new ServiceError(
            'SERVICE_PERMISSION_DENIED',
            `OpenLeaseSession: vmm ${caller.identity.id} may open a session only for its own ` +
              `id, not ${JSON.stringify(vmmId.slice(0, 80))}`,
          );
        }
        vmmId = caller.identity.id;
      }
      const t = m.sessions.openSession(vmmId);
      return {
        token: t.token,
        expiresAt: dateToTimestamp(t.expiresAt),
        leaseChannel: deps.leaseChannel ?? '',
      };
    }),

    forceReleaseLease: call('ForceReleaseLease', (req: pb.ForceReleaseLeaseRequest, c) => {
      requireRole(callerOf(c), ['operator'], 'ForceReleaseLease');
      const ref = refFromPb(req.region);
      const { fenced } = m.forceRelease(ref);
      return { region: regionToPb(m.regions.get(ref)), fenced: fencedToPb(fenced) };
    }),

    readPages: serverStream(logger, (_req, c: Parameters<typeof readPages>[1]) =>
      guarded(m, 'ReadPages', () => readPages(m, c)),
    ),

    ...snapshotHandlers(m, logger, call, leaseCaller),
    ...lazyHandlers(m, call),
  };
  return {
    name: serviceNames.memstore,
    definition: pb.MemstoreServiceService,
    implementation: implementation as unknown as ServiceRegistration['implementation'],
    access: MEMSTORE_ACCESS,
  };
}

/** A unary handler run against the open memstore (see {@link guarded}). */
type GuardedCall = <Req, Res>(
  what: string,
  fn: (req: Req, c: HasAuthContext) => Res | Promise<Res>,
) => ReturnType<typeof unary<Req, Res>>;

/** The snapshot calls of the gRPC edge (the README's Snapshots section). */
function snapshotHandlers(
  m: Memstore,
  logger: Logger,
  call: GuardedCall,
  leaseCaller: (c: HasAuthContext) => LeaseCaller,
): Pick<
  pb.MemstoreServiceServer,
  | 'createSnapshot'
  | 'getSnapshot'
  | 'listSnapshots'
  | 'deleteSnapshot'
  | 'flattenSnapshot'
  | 'exportSnapshot'
  | 'importSnapshot'
> {
  return {
    createSnapshot: call('CreateSnapshot', async (req: pb.CreateSnapshotRequest, c) => {
      // Like the lease calls: a vmm seals only its own VMs' regions.
      assertOwnHolder(leaseCaller(c), req.holder, 'CreateSnapshot');
      return { snapshot: snapshotToPb(await m.snapshots.create(newSnapshotFromPb(req))) };
    }),

    getSnapshot: call('GetSnapshot', (req: pb.GetSnapshotRequest) => {
      const got = m.snapshots.get(snapshotRefFromPb(req.snapshot), req.withDeviceState);
      return {
        snapshot: snapshotToPb(got.snapshot),
        deviceState: got.deviceState ?? new Uint8Array(0),
      };
    }),

    listSnapshots: call('ListSnapshots', (req: pb.ListSnapshotsRequest) => ({
      snapshots: m.snapshots.list(req.templatesOnly).map(snapshotToPb),
    })),

    deleteSnapshot: call('DeleteSnapshot', (req: pb.DeleteSnapshotRequest) => {
      m.snapshots.delete(snapshotRefFromPb(req.snapshot));
      return {};
    }),

    flattenSnapshot: call('FlattenSnapshot', async (req: pb.FlattenSnapshotRequest) => ({
      snapshot: snapshotToPb(await m.flattenSnapshot(snapshotRefFromPb(req.snapshot), req.name)),
    })),

    exportSnapshot: serverStream(logger, (_req, c: Parameters<typeof exportSnapshot>[1]) =>
      guarded(m, 'ExportSnapshot', () => exportSnapshot(m, c, logger)),
    ),

    importSnapshot: clientStream(logger, (c: Parameters<typeof importSnapshot>[1]) =>
      guarded(m, 'ImportSnapshot', () => importSnapshot(m, c)),
    ),
  };
}
