import * as grpc from '@grpc/grpc-js';
import { vmmStream } from '@handoff/proto';
import { createClient } from '@handoff/service';
import { describe, expect, it } from 'vitest';
import { MigrationError } from '../../model/migration-error.js';
import {
  checkFrame,
  encodeIncomingRequest,
  FrameBuilder,
  isZeroPage,
  MAX_FRAME_DATA,
  MigrationServiceClient,
  PAGE_SIZE,
  RUN_ZERO,
  type IncomingBlock,
} from './frames.js';

const table: IncomingBlock[] = [
  { pages: 16, mode: 'copy', bytes: null },
  { pages: 4, mode: 'ref', bytes: null },
];

function frame(runs: [number, number, number, number][], dataPages: number): vmmStream.PageFrame {
  return {
    runs: runs.map(([block, first, count, flags]) => ({
      block,
      firstPage: BigInt(first),
      pageCount: count,
      flags,
    })),
    data: new Uint8Array(dataPages * PAGE_SIZE),
  };
}

function rejects(f: vmmStream.PageFrame, pattern: RegExp): void {
  try {
    checkFrame(f, table);
  } catch (e) {
    expect(MigrationError.is(e, 'MIGRATION_BAD_STREAM')).toBe(true);
    expect((e as Error).message).toMatch(pattern);
    return;
  }
  throw new Error('the frame was accepted');
}

describe('checkFrame: every run is checked against the table before a write', () => {
  it('accepts data and zero runs whose data matches exactly', () => {
    const runs = checkFrame(
      frame(
        [
          [0, 0, 2, 0],
          [0, 2, 10, RUN_ZERO],
          [0, 12, 4, 0],
        ],
        6,
      ),
      table,
    );
    expect(runs.map((r) => [r.first, r.count, r.zero, r.dataOffset])).toEqual([
      [0, 2, false, 0],
      [2, 10, true, 2 * PAGE_SIZE],
      [12, 4, false, 2 * PAGE_SIZE],
    ]);
  });

  it('rejects an unknown block, a by-reference block, and pages past the end', () => {
    rejects(frame([[2, 0, 1, 0]], 1), /names block 2/);
    rejects(frame([[1, 0, 1, 0]], 1), /by reference/);
    rejects(frame([[0, 15, 2, 0]], 2), /has 16 pages/);
    rejects(frame([[0, 2 ** 40, 1, RUN_ZERO]], 0), /has 16 pages/);
  });

  it('rejects data that does not match the runs, unknown flags and empty runs', () => {
    rejects(frame([[0, 0, 2, 0]], 1), /beyond|take/);
    rejects(frame([[0, 0, 1, 0]], 2), /take 4096 data bytes but the frame carries 8192/);
    rejects(frame([[0, 0, 1, 4]], 1), /unknown flags/);
    rejects(frame([[0, 0, 0, 0]], 0), /empty/);
    rejects(frame([], 0), /no runs/);
  });
});

describe('FrameBuilder', () => {
  it('merges adjacent runs and cuts frames at 1 MiB of data', async () => {
    const frames: vmmStream.PageFrame[] = [];
    const b = new FrameBuilder((f) => {
      frames.push(f);
      return Promise.resolve();
    });
    const page = new Uint8Array(PAGE_SIZE).fill(7);
    await b.zero(0, 0, 5);
    await b.zero(0, 5, 5);
    for (let p = 10; p < 10 + 300; p++) await b.page(0, p, page);
    await b.flush();
    expect(frames).toHaveLength(2);
    expect(frames[0]!.data.length).toBe(MAX_FRAME_DATA);
    expect(frames[0]!.runs).toEqual([
      { block: 0, firstPage: 0n, pageCount: 10, flags: RUN_ZERO },
      { block: 0, firstPage: 10n, pageCount: 256, flags: 0 },
    ]);
    expect(frames[1]!.runs).toEqual([{ block: 0, firstPage: 266n, pageCount: 44, flags: 0 }]);
    const big: IncomingBlock[] = [{ pages: 512, mode: 'copy', bytes: null }];
    for (const f of frames) expect(() => checkFrame(f, big)).not.toThrow();
  });
});

function collect(): { frames: vmmStream.PageFrame[]; b: FrameBuilder } {
  const frames: vmmStream.PageFrame[] = [];
  const b = new FrameBuilder((f) => {
    frames.push(f);
    return Promise.resolve();
  });
  return { frames, b };
}

describe('FrameBuilder: runs of data as views', () => {
  const ram = new Uint8Array(new SharedArrayBuffer(1024 * PAGE_SIZE));
  for (let i = 0; i < ram.length; i += 97) ram[i] = (i >>> 12) + 1;

  it('sends a contiguous run as a view of the memory, split at 1 MiB, without copying', async () => {
    const { frames, b } = collect();
    await b.zero(0, 0, 4);
    await b.data(0, 4, ram.subarray(4 * PAGE_SIZE, 304 * PAGE_SIZE));
    await b.flush();
    expect(frames).toHaveLength(2);
    expect(frames[0]!.runs).toEqual([
      { block: 0, firstPage: 0n, pageCount: 4, flags: RUN_ZERO },
      { block: 0, firstPage: 4n, pageCount: 256, flags: 0 },
    ]);
    expect(frames[1]!.runs).toEqual([{ block: 0, firstPage: 260n, pageCount: 44, flags: 0 }]);
    expect(frames[0]!.data.buffer).toBe(ram.buffer);
    expect(frames[0]!.data.byteOffset).toBe(4 * PAGE_SIZE);
    expect(frames[0]!.data.length).toBe(MAX_FRAME_DATA);
    expect(frames[1]!.data.buffer).toBe(ram.buffer);
    expect(frames[1]!.data.byteOffset).toBe(260 * PAGE_SIZE);
  });

  it('merges page-by-page additions of adjacent memory into one view', async () => {
    const { frames, b } = collect();
    for (let p = 10; p < 20; p++) {
      await b.page(0, p, ram.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE));
    }
    await b.flush();
    expect(frames[0]!.runs).toEqual([{ block: 0, firstPage: 10n, pageCount: 10, flags: 0 }]);
    expect(frames[0]!.data.buffer).toBe(ram.buffer);
    expect(frames[0]!.data.length).toBe(10 * PAGE_SIZE);
  });

  it('gathers short scattered runs into one buffer of their own, in order', async () => {
    const { frames, b } = collect();
    await b.data(0, 1, ram.subarray(1 * PAGE_SIZE, 3 * PAGE_SIZE));
    await b.zero(0, 3, 2);
    await b.data(0, 5, ram.subarray(5 * PAGE_SIZE, 6 * PAGE_SIZE));
    await b.data(1, 0, ram.subarray(100 * PAGE_SIZE, 101 * PAGE_SIZE));
    await b.flush();
    expect(frames).toHaveLength(1);
    const f = frames[0]!;
    expect(f.data.buffer).not.toBe(ram.buffer);
    expect(f.data.length).toBe(4 * PAGE_SIZE);
    expect(f.data.subarray(0, 2 * PAGE_SIZE)).toEqual(ram.subarray(PAGE_SIZE, 3 * PAGE_SIZE));
    expect(f.data.subarray(2 * PAGE_SIZE, 3 * PAGE_SIZE)).toEqual(
      ram.subarray(5 * PAGE_SIZE, 6 * PAGE_SIZE),
    );
    expect(f.data.subarray(3 * PAGE_SIZE)).toEqual(ram.subarray(100 * PAGE_SIZE, 101 * PAGE_SIZE));
    expect(
      checkFrame(f, [
        { pages: 16, mode: 'copy', bytes: null },
        { pages: 4, mode: 'copy', bytes: null },
      ]).map((r) => r.dataOffset),
    ).toEqual([0, 2 * PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE]);
  });

  it('sends a long run on its own before a run that does not continue it', async () => {
    const { frames, b } = collect();
    await b.data(0, 0, ram.subarray(0, 100 * PAGE_SIZE)); // 400 KiB: worth a view
    await b.data(0, 200, ram.subarray(200 * PAGE_SIZE, 201 * PAGE_SIZE));
    await b.flush();
    expect(frames).toHaveLength(2);
    expect(frames[0]!.data.buffer).toBe(ram.buffer);
    expect(frames[0]!.runs).toEqual([{ block: 0, firstPage: 0n, pageCount: 100, flags: 0 }]);
    expect(frames[1]!.data.buffer).toBe(ram.buffer);
    expect(frames[1]!.runs).toEqual([{ block: 0, firstPage: 200n, pageCount: 1, flags: 0 }]);
  });
});

describe('isZeroPage', () => {
  it('finds a non-zero word anywhere in the page, and nothing outside it', () => {
    const words = new Uint32Array(3 * (PAGE_SIZE / 4));
    expect(isZeroPage(words, PAGE_SIZE / 4)).toBe(true);
    for (const at of [0, 1, 2, 3, 4, 5, 6, 7, 8, 513, 1022, 1023]) {
      words.fill(0);
      words[PAGE_SIZE / 4 + at] = at === 1023 ? 0x80000000 : 1;
      expect(isZeroPage(words, PAGE_SIZE / 4), `word ${at}`).toBe(false);
      expect(isZeroPage(words, 0)).toBe(true);
      expect(isZeroPage(words, 2 * (PAGE_SIZE / 4))).toBe(true);
    }
  });
});

describe('encodeIncomingRequest', () => {
  const generated = (r: vmmStream.IncomingRequest): Uint8Array =>
    vmmStream.IncomingRequest.encode(r).finish();
  const data = new Uint8Array(new SharedArrayBuffer(3 * PAGE_SIZE)).map((_, i) => i * 7);

  it('writes exactly the bytes of the generated encoder', () => {
    const frames: vmmStream.PageFrame[] = [
      {
        runs: [{ block: 0, firstPage: 0n, pageCount: 1, flags: 0 }],
        data: data.subarray(0, PAGE_SIZE),
      },
      {
        runs: [
          { block: 3, firstPage: 2n ** 40n + 5n, pageCount: 300, flags: RUN_ZERO },
          { block: 200, firstPage: 127n, pageCount: 128, flags: 0 },
          { block: 1, firstPage: 16384n, pageCount: 2, flags: 0 },
        ],
        data: data.subarray(PAGE_SIZE),
      },
      {
        runs: [{ block: 0, firstPage: 5n, pageCount: 2 ** 20, flags: RUN_ZERO }],
        data: new Uint8Array(0),
      },
      { runs: [], data: new Uint8Array(0) },
    ];
    for (const f of frames) {
      const req: vmmStream.IncomingRequest = { frame: { $case: 'pages', value: f } };
      const fast = encodeIncomingRequest(req);
      expect(Buffer.compare(fast, Buffer.from(generated(req)))).toBe(0);
      const back = vmmStream.IncomingRequest.decode(fast).frame;
      expect(back?.$case).toBe('pages');
      expect(back?.$case === 'pages' && back.value.runs).toEqual(f.runs);
    }
    const other: vmmStream.IncomingRequest = {
      frame: {
        $case: 'iteration',
        value: { iteration: 3, remainingDirtyBytes: 8192n, final: true },
      },
    };
    expect(Buffer.compare(encodeIncomingRequest(other), Buffer.from(generated(other)))).toBe(0);
  });

  it('refuses a first page beyond 2^53', () => {
    const req: vmmStream.IncomingRequest = {
      frame: {
        $case: 'pages',
        value: {
          runs: [{ block: 0, firstPage: 2n ** 60n, pageCount: 1, flags: RUN_ZERO }],
          data: new Uint8Array(0),
        },
      },
    };
    expect(() => encodeIncomingRequest(req)).toThrow(/out of range/);
  });
});

describe('MigrationServiceClient (fast page-frame serializer) over a real gRPC stream', () => {
  it('delivers frames the generated server decodes to the same runs and bytes', async () => {
    const received: vmmStream.IncomingRequest[] = [];
    const server = new grpc.Server();
    const ended = new Promise<void>((resolve) => {
      server.addService(vmmStream.MigrationServiceService, {
        incoming: (call: grpc.ServerDuplexStream<vmmStream.IncomingRequest, unknown>) => {
          call.on('data', (r: vmmStream.IncomingRequest) => received.push(r));
          call.on('end', () => {
            call.end();
            resolve();
          });
        },
      });
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    const client = createClient(MigrationServiceClient, `127.0.0.1:${port}`);
    try {
      const ram = new Uint8Array(new SharedArrayBuffer(300 * PAGE_SIZE)).map((_, i) => i % 253);
      const frames: vmmStream.PageFrame[] = [];
      const b = new FrameBuilder((f) => {
        frames.push(f);
        return Promise.resolve();
      });
      await b.zero(0, 0, 7);
      await b.data(0, 7, ram.subarray(7 * PAGE_SIZE, 300 * PAGE_SIZE));
      await b.flush();
      const call = client.incoming();
      call.on('data', () => undefined);
      call.on('error', () => undefined);
      for (const f of frames) call.write({ frame: { $case: 'pages', value: f } });
      call.write({
        frame: {
          $case: 'iteration',
          value: { iteration: 1, remainingDirtyBytes: 0n, final: true },
        },
      });
      call.end();
      await ended;
      expect(received.map((r) => r.frame?.$case)).toEqual(['pages', 'pages', 'iteration']);
      for (const [k, f] of frames.entries()) {
        const got = received[k]!.frame;
        expect(got?.$case === 'pages' && got.value.runs).toEqual(f.runs);
        expect(got?.$case === 'pages' && Buffer.compare(got.value.data, f.data)).toBe(0);
      }
    } finally {
      client.close();
      server.forceShutdown();
    }
  });
});
