import * as grpc from '@grpc/grpc-js';
import { memstore as pb } from '@handoff/proto';
import { createLogger, FramedSocket } from '@handoff/service';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { byId } from './calls.js';
import { LEASE_CHANNEL_MAX_FRAME_BYTES, LeaseChannelClient } from './lease-channel.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

type Cb = (err: unknown, res: unknown) => void;

/**
 * A stand-in memstore: OpenLeaseSession names a unix socket (or none, `path` ''), where a server
 * speaking the channel's framing welcomes every hello and hands other requests to `onRequest`.
 * Its gRPC StartLazyFill answers with a region named `grpc`.
 */
async function standIn(
  onRequest: (req: pb.LeaseChannelRequest, answer: (res: pb.LeaseChannelResponse) => void) => void,
  withChannel = true,
): Promise<LeaseChannelClient> {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-pages-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'lease.sock');
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    const framed: FramedSocket = new FramedSocket(socket, LEASE_CHANNEL_MAX_FRAME_BYTES, {
      frame: (payload) => {
        const req = pb.LeaseChannelRequest.decode(payload);
        const answer = (res: pb.LeaseChannelResponse): void => {
          framed.send(pb.LeaseChannelResponse.encode(res).finish());
        };
        if (req.call?.$case === 'hello') {
          answer({ id: req.id, result: { $case: 'hello', value: { vmmId: 'vmm-b', pid: 1 } } });
        } else {
          onRequest(req, answer);
        }
      },
      closed: () => {
        sockets.delete(socket);
        socket.destroy();
      },
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  const client = {
    openLeaseSession: (_req: unknown, _md: unknown, _opts: unknown, cb: Cb) =>
      cb(null, { token: 't', expiresAt: undefined, leaseChannel: withChannel ? path : '' }),
    startLazyFill: (_req: unknown, _md: unknown, _opts: unknown, cb: Cb) =>
      cb(null, { region: { id: 'r1', name: 'grpc' } }),
  } as unknown as pb.MemstoreServiceClient;
  const leases = new LeaseChannelClient({ memstore: () => client, vmmId: 'vmm-b', logger });
  cleanups.push(() => leases.close());
  return leases;
}

describe('FetchPages and StartLazyFill on the lease channel', () => {
  it('sends FetchPages on the channel and resolves with its answer, however late', async () => {
    const seen: pb.FetchPagesRequest[] = [];
    const leases = await standIn((req, answer) => {
      if (req.call?.$case !== 'fetchPages') return;
      seen.push(req.call.value);
      setTimeout(
        () => answer({ id: req.id, result: { $case: 'fetchPages', value: { waitedUs: 1234n } } }),
        30,
      );
    });
    const res = await leases.fetchPages(
      { region: byId('r1'), firstPage: 7n, pageCount: 16 },
      { deadlineMs: 5000 },
    );
    expect(res.waitedUs).toBe(1234n);
    expect(seen).toEqual([{ region: byId('r1'), firstPage: 7n, pageCount: 16 }]);
  });

  it("fails like memstore's error (a failed fill), and UNAVAILABLE without a channel", async () => {
    const leases = await standIn((req, answer) =>
      answer({
        id: req.id,
        result: { $case: 'error', value: { code: 'LAZY_FILL_FAILED', message: 'gone' } },
      }),
    );
    await expect(
      leases.fetchPages({ region: byId('r1'), firstPage: 0n, pageCount: 1 }),
    ).rejects.toMatchObject({ code: 'LAZY_FILL_FAILED', message: 'fetchPages: gone' });

    const none = await standIn(() => undefined, false);
    await expect(
      none.fetchPages({ region: byId('r1'), firstPage: 0n, pageCount: 1 }),
    ).rejects.toMatchObject({ code: 'GRPC_UNAVAILABLE', status: grpc.status.UNAVAILABLE });
    // StartLazyFill has a gRPC method: without a channel it goes there.
    const started = await none.startLazyFill({ region: byId('r1') });
    expect(started.region?.name).toBe('grpc');
  });

  it('sends StartLazyFill on the channel when there is one', async () => {
    const leases = await standIn((req, answer) => {
      if (req.call?.$case !== 'startLazyFill') return;
      answer({
        id: req.id,
        result: {
          $case: 'startLazyFill',
          value: { region: pb.Region.fromPartial({ id: 'r1', name: 'channel' }) },
        },
      });
    });
    const started = await leases.startLazyFill({ region: byId('r1') });
    expect(started.region?.name).toBe('channel');
  });
});
