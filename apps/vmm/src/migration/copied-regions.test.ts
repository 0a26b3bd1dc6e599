import * as grpc from '@grpc/grpc-js';
import { memstore as msPb } from '@handoff/proto';
import { createLogger } from '@handoff/service';
import { describe, expect, it } from 'vitest';
import type { RamContext } from '../ram/backing.js';
import { reapCopiedRegion } from './copied-regions.js';

const log = createLogger({ name: 'test', level: 'silent', format: 'json' });
const FAST = { intervalMs: 5, timeoutMs: 200 };
const SOURCE = 'vmm-a/kv';

type Callback = (err: Partial<grpc.ServiceError> | null, res?: unknown) => void;

/** A memstore that answers GetRegion from a script of regions (the last one repeats). */
function fakeMemstore(script: (msPb.Region | null)[]) {
  const calls = { deleted: [] as string[] };
  let i = 0;
  const notFound = {
    code: grpc.status.NOT_FOUND,
    details: 'no such region',
    metadata: new grpc.Metadata(),
  };
  const client = {
    getRegion(_req: unknown, _md: unknown, _opts: unknown, cb: Callback) {
      const r = script[Math.min(i++, script.length - 1)]!;
      if (r === null || calls.deleted.includes(r.id)) cb(notFound);
      else cb(null, { region: r });
    },
    deleteRegion(req: { region: msPb.RegionSelector }, _md: unknown, _opts: unknown, cb: Callback) {
      const sel = req.region.selector;
      if (sel?.$case === 'id') calls.deleted.push(sel.value);
      cb(null, {});
    },
  };
  const ctx = { memstore: () => client, deadlineMs: 1000 } as unknown as RamContext;
  return { ctx, calls };
}

function region(over: Partial<msPb.Region>): msPb.Region {
  return msPb.Region.fromPartial({ id: 'r1', name: 'kv-ram0', ...over });
}

const leasedBy = (holder: string) => ({ lease: msPb.Lease.fromPartial({ holder, epoch: 3n }) });
const fencedFrom = (holder: string, reason: msPb.FenceReason) => ({
  fenced: msPb.FencedLease.fromPartial({ holder, epoch: 4n, reason }),
});

describe('reapCopiedRegion', () => {
  it('leaves the deletion to a live source, which deletes the region when it retires the VM', async () => {
    const m = fakeMemstore([region(leasedBy(SOURCE)), region({}), null]);
    expect(await reapCopiedRegion(m.ctx, 'kv-ram0', SOURCE, log, FAST)).toBe('deleted-by-source');
    expect(m.calls.deleted).toEqual([]);
  });

  it('deletes the region once memstore fenced the lease of a source whose process died', async () => {
    const gone = msPb.FenceReason.FENCE_REASON_HOLDER_GONE;
    const m = fakeMemstore([region(leasedBy(SOURCE)), region(fencedFrom(SOURCE, gone))]);
    expect(await reapCopiedRegion(m.ctx, 'kv-ram0', SOURCE, log, FAST)).toBe('deleted-here');
    expect(m.calls.deleted).toEqual(['r1']);
  });

  it('never touches a region an operator fenced, another holder leases, or that stays unclaimed', async () => {
    const op = msPb.FenceReason.FENCE_REASON_OPERATOR;
    const gone = msPb.FenceReason.FENCE_REASON_HOLDER_GONE;
    for (const r of [
      region(fencedFrom(SOURCE, op)),
      region(leasedBy('vmm-c/kv')),
      region(fencedFrom('vmm-c/kv', gone)),
    ]) {
      const m = fakeMemstore([r]);
      expect(await reapCopiedRegion(m.ctx, 'kv-ram0', SOURCE, log, FAST)).toBe('not-ours');
      expect(m.calls.deleted).toEqual([]);
    }
    const m = fakeMemstore([region(leasedBy(SOURCE))]);
    expect(await reapCopiedRegion(m.ctx, 'kv-ram0', SOURCE, log, FAST)).toBe('left');
    expect(m.calls.deleted).toEqual([]);
  });
});
