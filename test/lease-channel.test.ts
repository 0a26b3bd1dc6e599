import * as grpc from '@grpc/grpc-js';
import {
  LEASE_CHANNEL_MAX_FRAME_BYTES,
  memstoreConfig,
  startMemstore,
  type MemstoreHandle,
} from '@handoff/memstore';
import { byName, failure, makeTempDirs, type TempDirs } from '@handoff/memstore/testing';
import { memstore as pb } from '@handoff/proto';
import {
  channelCredentials,
  createClient,
  createLogger,
  FramedSocket,
  RemoteError,
  unaryCall,
  type Logger,
} from '@handoff/service';
import { LeaseChannelClient, memstoreCall, PROCESS_INSTANCE, type RamContext } from '@handoff/vmm';
import { mkdirSync, readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

/**
 * The vmm's lease-channel client against memstore's lease channel, both in this process and
 * each through its package: the same results and errors as gRPC, fallback and reconnection;
 * and against a stand-in channel, the failures mid-call.
 */

const logger: Logger = createLogger({ name: 'test', level: 'silent', format: 'json' });

let dirs: TempDirs;
let memstore: MemstoreHandle | undefined;
let client: pb.MemstoreServiceClient | undefined;
let leases: LeaseChannelClient | undefined;

async function startReal(overrides: Parameters<typeof memstoreConfig>[0] = {}): Promise<void> {
  memstore = await startMemstore(
    memstoreConfig({
      port: 0,
      'state-dir': dirs.stateDir,
      'volatile-dir': dirs.volatileDir,
      'shutdown-timeout-ms': 1000,
      ...overrides,
    }),
  );
  client = createClient(pb.MemstoreServiceClient, memstore.address, channelCredentials(null));
  leases = new LeaseChannelClient({
    memstore: () => client!,
    vmmId: 'vmm-b',
    logger,
    deadlineMs: 5000,
  });
}

/** A region `name` leased by `holder` at epoch 1 (over gRPC). */
async function leased(name: string, holder: string): Promise<void> {
  await unaryCall(client!, 'createRegion', {
    name,
    size: 1n << 20n,
    kind: pb.RegionKind.REGION_KIND_VOLATILE,
  });
  await unaryCall(client!, 'acquireLease', { region: byName(name), holder });
}

beforeEach(() => {
  dirs = makeTempDirs('vmm-lease');
});

afterEach(async () => {
  leases?.close();
  client?.close();
  await memstore?.stop();
  leases = undefined;
  client = undefined;
  memstore = undefined;
  dirs.cleanup();
  vi.restoreAllMocks();
});

describe('LeaseChannelClient against a real memstore', () => {
  it('uses the channel: same results as gRPC, no gRPC call for the lease calls', async () => {
    await startReal();
    await leased('ram', 'vmm-a/vm1');
    const grpcTransfer = vi.spyOn(client!, 'transferLease');
    const grpcGet = vi.spyOn(client!, 'getRegion');
    const grpcValidate = vi.spyOn(client!, 'validateLease');
    expect(await leases!.prepare()).toBe(true);
    expect(leases!.connected).toBe(true);
    // Its session: memstore bound the connection to this process as vmm-b.
    expect(memstore!.memstore.catalog.getHolderProcess('vmm-b')).toMatchObject({
      pid: process.pid,
      instance: PROCESS_INSTANCE,
      goneAt: null,
    });

    const got = await leases!.getRegion({ region: byName('ram') });
    expect(got).toEqual(await unaryCall(client!, 'getRegion', { region: byName('ram') }));
    const valid = await leases!.validateLease({
      region: byName('ram'),
      holder: 'vmm-a/vm1',
      epoch: 1n,
    });
    expect(valid.valid).toBe(true);
    expect(valid.current).toMatchObject({ holder: 'vmm-a/vm1', epoch: 1n });
    const moved = await leases!.transferLease({
      region: byName('ram'),
      fromHolder: 'vmm-a/vm1',
      expectedEpoch: 1n,
      toHolder: 'vmm-b/vm1',
    });
    expect(moved.lease).toMatchObject({ holder: 'vmm-b/vm1', epoch: 2n });
    expect(
      (
        await unaryCall(client!, 'validateLease', {
          region: byName('ram'),
          holder: 'vmm-b/vm1',
          epoch: 2n,
        })
      ).valid,
    ).toBe(true);
    // Only the explicit checks above went over gRPC.
    expect(grpcTransfer).not.toHaveBeenCalled();
    expect(grpcGet).toHaveBeenCalledTimes(1);
    expect(grpcValidate).toHaveBeenCalledTimes(1);
  });

  it('fails exactly like the gRPC call (RemoteError, code, status, message)', async () => {
    await startReal();
    await leased('ram', 'vmm-a/vm1');
    const stale = {
      region: byName('ram'),
      fromHolder: 'vmm-a/vm1',
      expectedEpoch: 9n,
      toHolder: 'vmm-b/vm1',
    };
    const viaChannel = await failure(leases!.transferLease(stale));
    const viaGrpc = (await failure(unaryCall(client!, 'transferLease', stale))) as RemoteError;
    expect(viaChannel).toBeInstanceOf(RemoteError);
    expect(viaChannel).toMatchObject({
      code: 'LEASE_STALE_EPOCH',
      status: grpc.status.ABORTED,
      message: viaGrpc.message,
      name: 'RemoteError',
    });
    expect(leases!.connected).toBe(true);
    const missing = await failure(leases!.getRegion({ region: byName('nope') }));
    expect(missing).toMatchObject({ code: 'REGION_NOT_FOUND', status: grpc.status.NOT_FOUND });
    // memstoreCall cannot tell the paths apart either.
    const ctx = { memstoreAddress: memstore!.address } as RamContext;
    await expect(
      memstoreCall(ctx, 'block', () => leases!.getRegion({ region: byName('nope') })),
    ).rejects.toMatchObject({ code: 'VMM_REGION_NOT_FOUND' });
  });

  it('multiplexes concurrent calls on one connection', async () => {
    await startReal();
    await leased('ram', 'vmm-a/vm1');
    const all = await Promise.all(
      Array.from({ length: 50 }, (_, k) =>
        leases!.validateLease({ region: byName('ram'), holder: 'vmm-a/vm1', epoch: BigInt(k % 2) }),
      ),
    );
    all.forEach((r, k) => expect(r.valid).toBe(k % 2 === 1));
    expect(memstore!.leaseChannel!.connections).toBe(1);
  });

  it('falls back to gRPC when memstore serves no channel', async () => {
    await startReal({ 'lease-socket': 'off' });
    await leased('ram', 'vmm-a/vm1');
    const grpcTransfer = vi.spyOn(client!, 'transferLease');
    expect(await leases!.prepare()).toBe(false);
    const moved = await leases!.transferLease({
      region: byName('ram'),
      fromHolder: 'vmm-a/vm1',
      expectedEpoch: 1n,
      toHolder: 'vmm-b/vm1',
    });
    expect(moved.lease).toMatchObject({ holder: 'vmm-b/vm1', epoch: 2n });
    expect(grpcTransfer).toHaveBeenCalledTimes(1);
    expect(leases!.connected).toBe(false);
  });

  it('falls back to gRPC when it cannot connect, and reconnects later', async () => {
    await startReal();
    await leased('ram', 'vmm-a/vm1');
    const path = memstore!.leaseChannel!.path;
    await memstore!.leaseChannel!.close(); // the socket is gone; gRPC still serves
    const grpcGet = vi.spyOn(client!, 'getRegion');
    const got = await leases!.getRegion({ region: byName('ram') });
    expect(got.region?.name).toBe('ram');
    expect(grpcGet).toHaveBeenCalledTimes(1);
    expect(leases!.connected).toBe(false);

    // A channel appears at the path again (e.g. memstore restarted): the next call uses it.
    const fake = await fakeChannel(path, (req, framed) => {
      framed.send(
        pb.LeaseChannelResponse.encode({
          id: req.id,
          result: { $case: 'getRegion', value: { region: undefined } },
        }).finish(),
      );
    });
    try {
      const again = await leases!.getRegion({ region: byName('ram') });
      expect(again.region).toBeUndefined(); // the fake's answer, not memstore's
      expect(grpcGet).toHaveBeenCalledTimes(1);
    } finally {
      await fake.close();
    }
  });

  it('reconnects after memstore restarts', async () => {
    await startReal();
    await leased('ram', 'vmm-a/vm1');
    expect(await leases!.prepare()).toBe(true);
    const port = memstore!.port;
    await memstore!.stop();
    await vi.waitFor(() => expect(leases!.connected).toBe(false));
    memstore = await startMemstore(
      memstoreConfig({ port, 'state-dir': dirs.stateDir, 'volatile-dir': dirs.volatileDir }),
    );
    const grpcGet = vi.spyOn(client!, 'getRegion');
    const got = await leases!.getRegion({ region: byName('ram') }, { deadlineMs: 5000 });
    expect(got.region?.lease).toMatchObject({ holder: 'vmm-a/vm1', epoch: 1n });
    expect(leases!.connected).toBe(true);
    expect(grpcGet).not.toHaveBeenCalled();
  });

  it('a kept session opens at once and re-opens by itself after memstore restarts', async () => {
    await startReal();
    leases!.keepSession();
    await vi.waitFor(() => expect(leases!.connected).toBe(true));
    expect(memstore!.leaseChannel!.connections).toBe(1);
    const port = memstore!.port;
    await memstore!.stop();
    await vi.waitFor(() => expect(leases!.connected).toBe(false));
    memstore = await startMemstore(
      memstoreConfig({ port, 'state-dir': dirs.stateDir, 'volatile-dir': dirs.volatileDir }),
    );
    // No call made: the client came back on its own (the restarted memstore knows this process).
    await vi.waitFor(() => expect(leases!.connected).toBe(true), { timeout: 10_000 });
    expect(memstore.leaseChannel!.connections).toBe(1);
    expect(memstore.memstore.catalog.getHolderProcess('vmm-b')?.pid).toBe(process.pid);
  });

  it('a hello memstore refuses leaves the calls on gRPC', async () => {
    await startReal();
    await leased('ram', 'vmm-a/vm1');
    // Another live process holds vmm-b's session (as two vmms given the same --id would).
    memstore!.memstore.catalog.putHolderProcess({
      vmmId: 'vmm-b',
      pid: 1, // init: alive for as long as this test runs
      startTime: procStartTime(1),
      bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
      instance: 'another-process',
      openedAt: Date.now(),
      goneAt: null,
    });
    await memstore!.stop();
    memstore = undefined;
    client!.close();
    await startReal();
    expect(await leases!.prepare()).toBe(false);
    const grpcGet = vi.spyOn(client!, 'getRegion');
    expect((await leases!.getRegion({ region: byName('ram') })).region?.name).toBe('ram');
    expect(grpcGet).toHaveBeenCalledTimes(1);
  });
});

describe('LeaseChannelClient when the channel fails mid-call', () => {
  it('a connection broken after the write rejects as memstore-unavailable, not retried', async () => {
    const path = join(dirs.volatileDir, 'fake.sock');
    mkdirSync(dirs.volatileDir, { recursive: true, mode: 0o700 });
    const seen: pb.LeaseChannelRequest[] = [];
    const fake = await fakeChannel(path, (req, framed) => {
      seen.push(req);
      framed.destroy(); // memstore "crashed" after reading the request
    });
    const stub = stubClient(path);
    leases = new LeaseChannelClient({ memstore: () => stub.client, vmmId: 'vmm-b', logger });
    try {
      const req = {
        region: byName('ram'),
        fromHolder: 'vmm-a/vm1',
        expectedEpoch: 1n,
        toHolder: 'vmm-b/vm1',
      };
      const err = await failure(leases.transferLease(req));
      expect(err).toBeInstanceOf(RemoteError);
      expect(err).toMatchObject({ status: grpc.status.UNAVAILABLE, code: 'GRPC_UNAVAILABLE' });
      expect(err.message).toMatch(/^transferLease: .*unknown/);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.call).toEqual({ $case: 'transferLease', value: req });
      expect(stub.transferLease).not.toHaveBeenCalled();
      // memstoreCall reads it as an unreachable memstore.
      const ctx = { memstoreAddress: 'unix:fake' } as RamContext;
      const wrapped = await failure(
        memstoreCall(ctx, 'taking over the lease', () => leases!.transferLease(req)),
      );
      expect(wrapped).toMatchObject({ code: 'VMM_MEMSTORE_UNAVAILABLE' });
      expect(stub.transferLease).not.toHaveBeenCalled();
      expect(seen).toHaveLength(2); // reconnected lazily for the second call
    } finally {
      await fake.close();
    }
  });

  it('a call without an answer fails at its deadline like gRPC; late answers are ignored', async () => {
    const path = join(dirs.volatileDir, 'slow.sock');
    mkdirSync(dirs.volatileDir, { recursive: true, mode: 0o700 });
    const held: { req: pb.LeaseChannelRequest; framed: FramedSocket }[] = [];
    const fake = await fakeChannel(path, (req, framed) => held.push({ req, framed }));
    const stub = stubClient(path);
    leases = new LeaseChannelClient({ memstore: () => stub.client, vmmId: 'vmm-b', logger });
    try {
      const t0 = Date.now();
      const err = await failure(
        leases.validateLease({ region: byName('ram'), holder: 'h', epoch: 1n }, { deadlineMs: 50 }),
      );
      expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
      expect(err).toMatchObject({
        code: 'GRPC_DEADLINE_EXCEEDED',
        status: grpc.status.DEADLINE_EXCEEDED,
      });
      const ctx = { memstoreAddress: 'unix:fake' } as RamContext;
      await expect(memstoreCall(ctx, 'x', () => Promise.reject(err))).rejects.toMatchObject({
        code: 'VMM_MEMSTORE_UNAVAILABLE',
      });
      // The late answer is dropped; the connection keeps serving.
      const late = held[0]!;
      late.framed.send(
        pb.LeaseChannelResponse.encode({
          id: late.req.id,
          result: { $case: 'validateLease', value: { valid: true, current: undefined } },
        }).finish(),
      );
      const next = leases.validateLease({ region: byName('ram'), holder: 'h', epoch: 1n });
      await vi.waitFor(() => expect(held).toHaveLength(2));
      held[1]!.framed.send(
        pb.LeaseChannelResponse.encode({
          id: held[1]!.req.id,
          result: { $case: 'error', value: { code: 'LEASE_NOT_HELD', message: 'nobody' } },
        }).finish(),
      );
      expect(await failure(next)).toMatchObject({
        code: 'LEASE_NOT_HELD',
        status: grpc.status.FAILED_PRECONDITION,
        message: 'validateLease: nobody',
      });
      expect(stub.validateLease).not.toHaveBeenCalled();
    } finally {
      await fake.close();
    }
  });
});

/** A stand-in memstore gRPC client: OpenLeaseSession names `path`; the lease methods are spies. */
function stubClient(path: string): {
  client: pb.MemstoreServiceClient;
  transferLease: ReturnType<typeof vi.fn>;
  validateLease: ReturnType<typeof vi.fn>;
} {
  type Cb = (err: grpc.ServiceError | null, res: unknown) => void;
  const unreachable = (_req: unknown, _md: unknown, _opts: unknown, cb: Cb): void =>
    cb(
      Object.assign(new Error('unreachable'), {
        code: grpc.status.UNAVAILABLE,
        details: 'unreachable',
        metadata: new grpc.Metadata(),
      }) as grpc.ServiceError,
      undefined,
    );
  const transferLease = vi.fn(unreachable);
  const validateLease = vi.fn(unreachable);
  const client = {
    openLeaseSession: (_req: unknown, _md: unknown, _opts: unknown, cb: Cb) =>
      cb(null, { token: 'token', expiresAt: undefined, leaseChannel: path }),
    transferLease,
    validateLease,
  } as unknown as pb.MemstoreServiceClient;
  return { client, transferLease, validateLease };
}

/**
 * A unix-socket server speaking the channel's framing: welcomes every hello, answers the other
 * requests as `onRequest` decides.
 */
async function fakeChannel(
  path: string,
  onRequest: (req: pb.LeaseChannelRequest, framed: FramedSocket) => void,
): Promise<{ server: Server; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    const framed: FramedSocket = new FramedSocket(socket, LEASE_CHANNEL_MAX_FRAME_BYTES, {
      frame: (payload) => {
        const req = pb.LeaseChannelRequest.decode(payload);
        if (req.call?.$case !== 'hello') {
          onRequest(req, framed);
          return;
        }
        framed.send(
          pb.LeaseChannelResponse.encode({
            id: req.id,
            result: { $case: 'hello', value: { vmmId: 'vmm-b', pid: process.pid } },
          }).finish(),
        );
      },
      closed: () => {
        sockets.delete(socket);
        socket.destroy();
      },
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Field 22 of /proc/<pid>/stat: when the process started. */
function procStartTime(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
}
