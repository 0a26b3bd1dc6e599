import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memstore as pb } from '@handoff/proto';
import { mapFile } from '@handoff/shm';
import { afterAll, describe, expect, it } from 'vitest';
import { ArmedLeases, LeaseLink, openLeaseStep, readAnswer } from './thread-step.js';

const dir = mkdtempSync(join(tmpdir(), 'handoff-lease-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('readAnswer (the vCPU thread reads only what it checks)', () => {
  it('reads a transfer answer as the generated codec wrote it', () => {
    const bytes = pb.LeaseChannelResponse.encode({
      id: 7n,
      result: {
        $case: 'transferLease',
        value: { lease: { holder: 'vmm-b/vm', epoch: 12n, grantedAt: { seconds: 1n, nanos: 5 } } },
      },
    }).finish();
    expect(readAnswer(bytes)).toEqual({ id: 7n, holder: 'vmm-b/vm', epoch: 12n });
  });

  it("reads memstore's error", () => {
    const bytes = pb.LeaseChannelResponse.encode({
      id: 3n,
      result: { $case: 'error', value: { code: 'LEASE_STALE_EPOCH', message: 'stale' } },
    }).finish();
    expect(readAnswer(bytes)).toEqual({
      id: 3n,
      error: { code: 'LEASE_STALE_EPOCH', message: 'stale' },
    });
  });

  it('refuses an answer of another call, one without a result, and garbage', () => {
    const other = pb.LeaseChannelResponse.encode({
      id: 1n,
      result: { $case: 'validateLease', value: { valid: true, current: undefined } },
    }).finish();
    expect(() => readAnswer(other)).toThrow(/another call/);
    expect(() =>
      readAnswer(pb.LeaseChannelResponse.encode({ id: 1n, result: undefined }).finish()),
    ).toThrow(/no result/);
    expect(() => readAnswer(Uint8Array.of(0xff, 0xff, 0xff))).toThrow();
  });
});

describe('ArmedLeases (flips in an arms file)', () => {
  const ARMED = (5 << 8) | 1;
  const FLIPPED = (5 << 8) | 2;

  function armsFile(words: Record<number, number>): string {
    const path = join(dir, `arms-${Object.keys(words).join('-')}-${Math.random()}`);
    const bytes = new Uint8Array(4096);
    const view = new DataView(bytes.buffer);
    for (const [offset, word] of Object.entries(words)) view.setInt32(Number(offset), word, true);
    writeFileSync(path, bytes);
    return path;
  }

  const transfer = (offset: number, epoch: number) => ({
    regionName: `r${offset}`,
    offset,
    armedWord: ARMED,
    flippedWord: FLIPPED,
    epoch,
  });

  it('flips every armed word: the leases are here at their new epochs', () => {
    const path = armsFile({ 256: ARMED, 512: ARMED });
    const step = openLeaseStep({
      kind: 'armed',
      armsPath: path,
      transfers: [transfer(256, 4), transfer(512, 9)],
      timeoutMs: 1000,
    });
    expect(step.early).toBe(false);
    expect(step.receive()).toEqual({ ok: false, epochs: [null, null] }); // nothing sent yet
    expect(step.send()).toBe(true);
    expect(step.receive()).toEqual({ ok: true, epochs: [4, 9] });
    step.close();
    const m = mapFile(path);
    const words = new Int32Array(m.buffer);
    expect([words[64], words[128]]).toEqual([FLIPPED, FLIPPED]);
    m.close();
  });

  it('stops at a word memstore settled: what flipped before is reported, to be given back', () => {
    const cancelled = (5 << 8) | 3;
    const path = armsFile({ 256: ARMED, 512: cancelled });
    const step = new ArmedLeases({
      kind: 'armed',
      armsPath: path,
      transfers: [transfer(256, 4), transfer(512, 9)],
      timeoutMs: 1000,
    });
    expect(step.send()).toBe(false);
    const r = step.receive();
    expect(r.ok).toBe(false);
    expect(r.code).toBe('VMM_LEASE_LOST');
    expect(r.epochs).toEqual([4, null]);
    step.close();
  });

  it('a word from an older arming (another generation) does not flip', () => {
    const path = armsFile({ 256: (6 << 8) | 1 });
    const step = new ArmedLeases({
      kind: 'armed',
      armsPath: path,
      transfers: [transfer(256, 4)],
      timeoutMs: 1000,
    });
    expect(step.send()).toBe(false);
    step.close();
  });

  it('refuses a word outside the file or not aligned', () => {
    const path = armsFile({});
    for (const offset of [4096, 2, -4]) {
      expect(
        () =>
          new ArmedLeases({
            kind: 'armed',
            armsPath: path,
            transfers: [transfer(offset, 1)],
            timeoutMs: 1000,
          }),
      ).toThrow(/not inside/);
    }
  });
});

describe('LeaseLink', () => {
  it('fails to open when the lease channel is not there (nothing was sent)', () => {
    expect(
      () =>
        new LeaseLink({
          kind: 'channel',
          socketPath: join(dir, 'missing.sock'),
          transfers: [],
          timeoutMs: 100,
        }),
    ).toThrow();
  });
});
