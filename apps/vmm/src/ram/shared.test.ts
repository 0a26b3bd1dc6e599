import * as grpc from '@grpc/grpc-js';
import { memstore as msPb } from '@handoff/proto';
import { createLogger } from '@handoff/service';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RamContext } from './backing.js';
import { mapShared } from './shared.js';

type Callback = (err: Partial<grpc.ServiceError> | null, res?: unknown) => void;
const SIZE = 64 * 1024;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A region file and a memstore whose ReleaseLease answers from `answers` (then OK). */
function setup(answers: (grpc.status | 'ok')[]) {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-shared-'));
  dirs.push(dir);
  const path = join(dir, 'region.mem');
  writeFileSync(path, Buffer.alloc(SIZE));
  const calls: string[] = [];
  const client = {
    releaseLease(_req: unknown, _md: unknown, _opts: unknown, cb: Callback) {
      const a = answers.shift() ?? 'ok';
      calls.push(`release:${a}`);
      if (a === 'ok') cb(null, {});
      else cb({ code: a, details: `answer ${a}`, metadata: new grpc.Metadata() });
    },
  };
  const ctx = {
    vmmId: 'vmm-a',
    vmName: 'kv',
    memstore: () => client,
    memstoreAddress: '127.0.0.1:1',
    deadlineMs: 1000,
    logger: createLogger({ name: 'test', level: 'silent', format: 'json' }),
  } as unknown as RamContext;
  const region = msPb.Region.fromPartial({ id: 'r1', name: 'kv-ram0', path, size: BigInt(SIZE) });
  const spec = {
    id: 'ram0',
    guestBase: 0x8000_0000,
    size: SIZE,
    backend: 'shared' as const,
    region: 'kv-ram0',
  };
  return { ctx, region, spec, calls };
}

const until = async (ok: () => boolean) => {
  for (let i = 0; i < 100 && !ok(); i++) await new Promise((r) => setTimeout(r, 50));
};

describe('closing shared RAM', () => {
  it('gives the lease back once memstore answers again, then deletes an owned region', async () => {
    const s = setup([grpc.status.UNAVAILABLE, grpc.status.UNAVAILABLE]);
    let deleted = false;
    const ram = mapShared(s.spec, s.region, 3, s.ctx, async () => {
      deleted = true;
    });
    await ram.close();
    expect(deleted).toBe(false);
    await until(() => deleted);
    expect(s.calls).toEqual(['release:14', 'release:14', 'release:ok']);
    expect(deleted).toBe(true);
  });

  it('leaves a region whose lease memstore says is not ours', async () => {
    const s = setup([grpc.status.UNAVAILABLE, grpc.status.FAILED_PRECONDITION]);
    let deleted = false;
    const ram = mapShared(s.spec, s.region, 3, s.ctx, async () => {
      deleted = true;
    });
    await ram.close();
    await until(() => s.calls.length === 2);
    await new Promise((r) => setTimeout(r, 500));
    expect(s.calls).toEqual(['release:14', 'release:9']);
    expect(deleted).toBe(false);
  });
});
