import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memstore as pb } from '@handoff/proto';
import { mapFile } from '@handoff/shm';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import {
  ArmedLeases,
  LeaseLink,
  openLeaseStep,
  readAnswer,
  readHelloAnswer,
} from './thread-step.js';

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

describe('readHelloAnswer', () => {
  it('null for a welcome, the refusal for an error, and refuses anything else', () => {
    const welcome = pb.LeaseChannelResponse.encode({
      id: 0n,
      result: { $case: 'hello', value: { vmmId: 'vmm-a', pid: 7 } },
    }).finish();
    expect(readHelloAnswer(welcome)).toBeNull();
    const refused = pb.LeaseChannelResponse.encode({
      id: 0n,
      result: { $case: 'error', value: { code: 'SERVICE_UNAUTHENTICATED', message: 'no' } },
    }).finish();
    expect(readHelloAnswer(refused)).toEqual({ code: 'SERVICE_UNAUTHENTICATED', message: 'no' });
    const other = pb.LeaseChannelResponse.encode({
      id: 0n,
      result: { $case: 'validateLease', value: { valid: true, current: undefined } },
    }).finish();
    expect(() => readHelloAnswer(other)).toThrow(/neither/);
  });
});

describe('LeaseLink', () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
  });

  const hello = pb.LeaseChannelRequest.encode({
    id: 0n,
    call: { $case: 'hello', value: { token: 't0k3n', instance: 'instance-1' } },
  }).finish();

  /**
   * A lease channel in another process (this thread blocks on the socket) that records the
   * first frame it gets and answers it with `answer`.
   */
  async function channelAnswering(answer: pb.LeaseChannelResponse): Promise<{
    path: string;
    firstFrame: Promise<Uint8Array>;
  }> {
    const path = join(dir, `link-${Math.random().toString(36).slice(2)}.sock`);
    const bytes = pb.LeaseChannelResponse.encode(answer).finish();
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const net = require('node:net');
         const answer = Buffer.from(process.argv[2], 'hex');
         net.createServer((s) => {
           let got = Buffer.alloc(0);
           s.on('data', (d) => {
             got = Buffer.concat([got, d]);
             if (got.length < 4 || got.length < 4 + got.readUInt32BE(0)) return;
             process.stdout.write(got.subarray(4, 4 + got.readUInt32BE(0)).toString('hex') + '\\n');
             const head = Buffer.alloc(4);
             head.writeUInt32BE(answer.length);
             s.write(Buffer.concat([head, answer]));
           });
         }).listen(process.argv[1], () => process.stdout.write('listening\\n'));`,
        path,
        Buffer.from(bytes).toString('hex'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(child);
    const lines: string[] = [];
    let waiting: (() => void) | null = null;
    let buffered = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buffered += d;
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      lines.push(...parts);
      waiting?.();
    });
    const line = async (k: number): Promise<string> => {
      while (lines.length <= k) await new Promise<void>((r) => (waiting = r));
      return lines[k]!;
    };
    expect(await line(0)).toBe('listening');
    return { path, firstFrame: line(1).then((hex) => new Uint8Array(Buffer.from(hex, 'hex'))) };
  }

  it('fails to open when the lease channel is not there (nothing was sent)', () => {
    expect(
      () =>
        new LeaseLink({
          kind: 'channel',
          socketPath: join(dir, 'missing.sock'),
          hello,
          transfers: [],
          timeoutMs: 100,
        }),
    ).toThrow();
  });

  it('says hello first, at connect, and opens once memstore welcomes it', async () => {
    const ch = await channelAnswering({
      id: 0n,
      result: { $case: 'hello', value: { vmmId: 'vmm-a', pid: 1 } },
    });
    const link = new LeaseLink({
      kind: 'channel',
      socketPath: ch.path,
      hello,
      transfers: [],
      timeoutMs: 5000,
    });
    expect(await ch.firstFrame).toEqual(hello);
    expect(link.send()).toBe(true);
    expect(link.receive()).toEqual({ ok: true, epochs: [] });
    link.close();
  });

  it('does not open when memstore refuses the hello', async () => {
    const ch = await channelAnswering({
      id: 0n,
      result: {
        $case: 'error',
        value: { code: 'SERVICE_UNAUTHENTICATED', message: 'the token was used' },
      },
    });
    expect(
      () =>
        new LeaseLink({
          kind: 'channel',
          socketPath: ch.path,
          hello,
          transfers: [],
          timeoutMs: 5000,
        }),
    ).toThrow(/refused the hello: SERVICE_UNAUTHENTICATED: the token was used/);
  });
});
