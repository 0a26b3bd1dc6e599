import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { memstore as pb, timestampToDate } from '@handoff/proto';
import { RemoteError, unaryCall } from '@handoff/service';
import { CliError } from '../errors.js';
import type { Clients } from './clients.js';

/** How a snapshot holds its RAM. */
export type SnapshotKindName = 'bypass' | 'full' | 'imported' | 'unknown';

/** One RAM block of a snapshot. */
export interface SnapshotBlockView {
  id: string;
  guestBase: number;
  size: bigint;
  /** The sealed region that holds the block's memory. */
  regionId: string;
  regionName: string;
  /** The snapshot owns the region (deleted with it); else it only pins a region a user made. */
  owned: boolean;
  /** Bytes of the region backed by memory or disk. */
  storedBytes: bigint;
  /**
   * For a block of a layer: the pages its region holds, as runs [first, count] ascending (the
   * other pages are the parent's); [] for a standalone snapshot's block.
   */
  layerPages: [number, number][];
  /** Pages the layer's region holds (0 for a standalone snapshot's block). */
  layerPageCount: bigint;
}

/** A snapshot as vmctl shows it (converted from the wire at this edge). */
export interface SnapshotView {
  id: string;
  name: string;
  kind: SnapshotKindName;
  template: boolean;
  createdAt: string | undefined;
  /** The VM it was saved from and its vmm. */
  vm: string;
  vmm: string;
  blocks: SnapshotBlockView[];
  deviceStateBytes: bigint;
  /** Lease holders `<vmm>/<vm>` of the VMs that run from it. */
  clones: string[];
  /** The snapshot it layers on, or ''. */
  parent: string;
  /** Snapshots below it: 0 for a standalone one, 1 for a layer on a standalone one, ... */
  depth: number;
  /** Its device state plus the stored bytes of the regions it owns. */
  storedBytes: bigint;
}

const KIND: Partial<Record<pb.SnapshotKind, SnapshotKindName>> = {
  [pb.SnapshotKind.SNAPSHOT_KIND_BYPASS]: 'bypass',
  [pb.SnapshotKind.SNAPSHOT_KIND_FULL]: 'full',
  [pb.SnapshotKind.SNAPSHOT_KIND_IMPORTED]: 'imported',
};

function toView(s: pb.Snapshot | undefined): SnapshotView {
  if (s === undefined) throw new Error('memstore answered without the snapshot');
  return {
    id: s.id,
    name: s.name,
    kind: KIND[s.kind] ?? 'unknown',
    template: s.template,
    createdAt: timestampToDate(s.createdAt)?.toISOString(),
    vm: s.vmName,
    vmm: s.vmmId,
    blocks: s.blocks.map((b) => ({
      id: b.id,
      guestBase: Number(b.guestBase),
      size: b.size,
      regionId: b.regionId,
      regionName: b.regionName,
      owned: b.owned,
      storedBytes: b.storedBytes,
      layerPages: pageRuns(b.layerPages, Number(b.size / 4096n)),
      layerPageCount: b.layerPageCount,
    })),
    deviceStateBytes: s.deviceStateBytes,
    clones: [...s.clones],
    parent: s.parent,
    depth: s.depth,
    storedBytes: s.storedBytes,
  };
}

/** The runs [first, count] of set bits of a layer bitmap (1 bit per page, LSB first). */
export function pageRuns(bitmap: Uint8Array, pages: number): [number, number][] {
  const runs: [number, number][] = [];
  let start = -1;
  for (let p = 0; p <= pages; p++) {
    const set = p < pages && p >> 3 < bitmap.length && ((bitmap[p >> 3]! >> (p & 7)) & 1) === 1;
    if (set && start < 0) start = p;
    else if (!set && start >= 0) {
      runs.push([start, p - start]);
      start = -1;
    }
  }
  return runs;
}

/** Runs of pages as text: `2-3, 11` (at most `max` runs, then `... and N more runs`). */
export function pageRunsText(runs: [number, number][], max = 8): string {
  if (runs.length === 0) return 'none';
  const shown = runs
    .slice(0, max)
    .map(([first, count]) => (count === 1 ? `${first}` : `${first}-${first + count - 1}`));
  const more = runs.length > max ? `, ... and ${runs.length - max} more runs` : '';
  return shown.join(', ') + more;
}

/** RAM of a snapshot: the sum of its blocks' sizes. */
export function snapshotMemory(s: SnapshotView): bigint {
  return s.blocks.reduce((sum, b) => sum + b.size, 0n);
}

/**
 * The JSON document of a snapshot (`--output json`): kebab-case keys, blocks with their
 * regions, the clones that run from it.
 */
export function snapshotJson(s: SnapshotView): Record<string, unknown> {
  return {
    name: s.name,
    id: s.id,
    kind: s.kind,
    template: s.template,
    created: s.createdAt ?? null,
    vm: s.vm,
    vmm: s.vmm,
    memory: snapshotMemory(s),
    storedBytes: s.storedBytes,
    deviceStateBytes: s.deviceStateBytes,
    parent: s.parent === '' ? null : s.parent,
    depth: s.depth,
    clones: s.clones,
    blocks: s.blocks.map((b) => ({
      id: b.id,
      base: `0x${b.guestBase.toString(16)}`,
      size: b.size,
      region: b.regionName,
      regionId: b.regionId,
      owned: b.owned,
      storedBytes: b.storedBytes,
      layerPageCount: b.layerPageCount,
      layerPages: b.layerPages.map(([first, count]) => ({ first, count })),
    })),
  };
}

/** A snapshot selector: a UUID-looking string is an id, anything else a name. */
function selector(ref: string): pb.SnapshotSelector {
  const isId = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(ref);
  return { selector: isId ? { $case: 'id', value: ref } : { $case: 'name', value: ref } };
}

/** Longest an export or import may take (they take as long as the bytes take). */
export const TRANSFER_DEADLINE_MS = 24 * 3600_000;

/** Longest a flatten may take: it copies every page the chain holds. */
export const FLATTEN_DEADLINE_MS = 3600_000;

/** Largest data message of an import (the contract's limit). */
export const IMPORT_CHUNK = 1 << 20;

/** Bytes moved so far of a total (0 when not known yet). */
export type TransferListener = (done: number, total: number) => void;

/** memstore's snapshot calls, in domain terms. */
export const snapshots = {
  async list(c: Clients, templatesOnly = false): Promise<SnapshotView[]> {
    const res = await unaryCall(
      c.memstore,
      'listSnapshots',
      { templatesOnly },
      { deadlineMs: c.endpoints.timeoutMs },
    );
    return res.snapshots.map(toView).sort((a, b) => a.name.localeCompare(b.name));
  },

  async get(c: Clients, ref: string): Promise<SnapshotView> {
    const res = await unaryCall(
      c.memstore,
      'getSnapshot',
      { snapshot: selector(ref), withDeviceState: false },
      { deadlineMs: c.endpoints.timeoutMs },
    );
    return toView(res.snapshot);
  },

  /**
   * The snapshot and the snapshots below it, parent first, root last (one GetSnapshot each;
   * at most `depth` of them, so a damaged answer cannot loop).
   */
  async chain(c: Clients, s: SnapshotView): Promise<SnapshotView[]> {
    const below: SnapshotView[] = [];
    let parent = s.parent;
    while (parent !== '' && below.length < s.depth) {
      const p = await snapshots.get(c, parent);
      below.push(p);
      parent = p.parent;
    }
    return below;
  },

  /**
   * FlattenSnapshot: the layer `ref` and the layers below it written into a standalone snapshot
   * `name` (regions of its own; the original stays).
   */
  async flatten(c: Clients, ref: string, name: string): Promise<SnapshotView> {
    const res = await unaryCall(
      c.memstore,
      'flattenSnapshot',
      { snapshot: selector(ref), name },
      { deadlineMs: Math.max(c.endpoints.timeoutMs, FLATTEN_DEADLINE_MS) },
    );
    return toView(res.snapshot);
  },

  async delete(c: Clients, ref: string): Promise<void> {
    await unaryCall(
      c.memstore,
      'deleteSnapshot',
      { snapshot: selector(ref) },
      { deadlineMs: c.endpoints.timeoutMs },
    );
  },

  /**
   * ExportSnapshot into `file`: the bytes go to `<file>.partial`, which is fsynced and then
   * renamed to `file` once the stream ended with every byte its first message announced; any
   * failure removes the partial file. Resolves with the file's length.
   */
  async export(
    c: Clients,
    ref: string,
    file: string,
    onProgress: TransferListener = () => undefined,
  ): Promise<number> {
    const partial = `${file}.partial`;
    const out = await open(partial, 'w', 0o644);
    let written = 0;
    let total = -1;
    try {
      const call = c.memstore.exportSnapshot(
        { snapshot: selector(ref) },
        { deadline: Date.now() + TRANSFER_DEADLINE_MS },
      );
      try {
        for await (const m of call as AsyncIterable<pb.ExportSnapshotResponse>) {
          if (total < 0) total = Number(m.totalBytes);
          if (written + m.data.length > total) {
            call.cancel();
            throw new CliError(
              'CLI_FAILED',
              `memstore sent more than the ${total} bytes it announced for ${ref}; the export ` +
                'is not usable',
            );
          }
          for (let off = 0; off < m.data.length;) {
            off += (await out.write(m.data, off, m.data.length - off)).bytesWritten;
          }
          written += m.data.length;
          onProgress(written, total);
        }
      } catch (err) {
        if (err instanceof CliError) throw err;
        throw RemoteError.fromGrpc(err as grpc.ServiceError, 'exportSnapshot');
      }
      if (total < 0 || written !== total) {
        throw new CliError(
          'CLI_FAILED',
          `the export of ${ref} ended after ${written} of ${Math.max(total, 0)} bytes; try again`,
        );
      }
      await out.sync();
      await out.close();
      await rename(partial, file);
      await syncDirectory(dirname(file));
      return written;
    } catch (err) {
      await out.close().catch(() => undefined);
      await rm(partial, { force: true });
      throw err;
    }
  },

  /**
   * ImportSnapshot from `file`: the start message (the name, '' for the one in the file), then
   * the file in messages of at most {@link IMPORT_CHUNK} bytes, each sent only when the stream
   * takes more (its backpressure). memstore checks the file; a refusal stops the upload.
   */
  async import(
    c: Clients,
    file: string,
    opts: { name: string; template: boolean },
    onProgress: TransferListener = () => undefined,
  ): Promise<SnapshotView> {
    const size = (await stat(file)).size;
    let refused: Error | undefined;
    let settle!: (err: Error | null, res?: pb.ImportSnapshotResponse) => void;
    const answered = new Promise<pb.ImportSnapshotResponse>((resolve, reject) => {
      settle = (err, res) => (err !== null ? reject(err) : resolve(res!));
    });
    answered.catch(() => undefined);
    const call = c.memstore.importSnapshot(
      { deadline: Date.now() + TRANSFER_DEADLINE_MS },
      (err: grpc.ServiceError | null, res: pb.ImportSnapshotResponse) => {
        if (err !== null) refused = RemoteError.fromGrpc(err, 'importSnapshot');
        settle(refused ?? null, res);
      },
    );
    const input = createReadStream(file, { highWaterMark: IMPORT_CHUNK });
    try {
      call.write({ part: { $case: 'start', value: { name: opts.name, template: opts.template } } });
      let sent = 0;
      for await (const chunk of input as AsyncIterable<Buffer>) {
        if (refused !== undefined) break;
        if (!call.write({ part: { $case: 'data', value: chunk } })) {
          await Promise.race([once(call, 'drain'), answered.catch(() => undefined)]);
        }
        sent += chunk.length;
        onProgress(sent, size);
      }
      call.end();
    } finally {
      input.destroy();
    }
    return toView((await answered).snapshot);
  },
};

/** fsyncs a directory so a rename in it is on disk (best effort where directories cannot be). */
async function syncDirectory(dir: string): Promise<void> {
  const fd = await open(dir, 'r').catch(() => undefined);
  if (fd === undefined) return;
  try {
    await fd.sync();
  } catch {
    // some filesystems refuse fsync on a directory: the rename stands
  } finally {
    await fd.close();
  }
}
