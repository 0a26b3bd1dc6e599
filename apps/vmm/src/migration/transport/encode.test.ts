import * as grpc from '@grpc/grpc-js';
import { vmmStream } from '@handoff/proto';
import { createClient } from '@handoff/service';
import { describe, expect, it } from 'vitest';
import { FrameBuilder, PAGE_SIZE, RUN_ZERO } from '../pages/frames.js';
import { encodeIncomingRequest, MigrationServiceClient } from './encode.js';

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
    const client = createClient(
      MigrationServiceClient,
      `127.0.0.1:${port}`,
      grpc.credentials.createInsecure(),
    );
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
