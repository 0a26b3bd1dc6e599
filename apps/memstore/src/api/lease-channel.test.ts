import { memstore as pb } from '@handoff/proto';
import type { RemoteError } from '@handoff/service';
import {
  channelCredentials,
  createClient,
  FramedSocket,
  frameHeader,
  unaryCall,
  type Logger,
} from '@handoff/service';
import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdtempSync,
  rmSync,
  lstatSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs';
import { mapFile, type Mapping } from '@handoff/shm';
import * as grpc from '@grpc/grpc-js';
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  LEASE_SOCKET_FILE_NAME,
  memstoreConfig,
  pageSocketFileName,
  type MemstoreConfig,
} from '../config.js';
import { leaseArmsFileName } from '../memstore.js';
import { startMemstore, type MemstoreHandle } from '../start.js';
import {
  byName,
  failure,
  makeTempDirs,
  recordingLogger,
  type LogEntry,
  type TempDirs,
} from '../testing/fixtures.js';
import { LEASE_CHANNEL_MAX_FRAME_BYTES, startLeaseChannel } from './lease-channel.js';

let dirs: TempDirs;
let handle: MemstoreHandle;
let client: pb.MemstoreServiceClient;
let log: LogEntry[];
/** The recording logger behind `log`. */
let log_: Logger;
const opened: { handle: MemstoreHandle; client: pb.MemstoreServiceClient }[] = [];

function config(overrides: Partial<MemstoreConfig> = {}): MemstoreConfig {
  return memstoreConfig({
    port: 0,
    'state-dir': dirs.stateDir,
    'volatile-dir': dirs.volatileDir,
    'max-region-size': '256M',
    'shutdown-timeout-ms': 1000,
    ...overrides,
  });
}

async function start(
  overrides: Partial<MemstoreConfig> = {},
  logger?: Logger,
): Promise<{ handle: MemstoreHandle; client: pb.MemstoreServiceClient }> {
  const h = await startMemstore(config(overrides), logger);
  const c = createClient(pb.MemstoreServiceClient, h.address, channelCredentials(null));
  opened.push({ handle: h, client: c });
  return { handle: h, client: c };
}

beforeEach(async () => {
  dirs = makeTempDirs();
  const rec = recordingLogger();
  log = rec.entries;
  log_ = rec.logger;
  ({ handle, client } = await start({}, rec.logger));
});

afterEach(async () => {
  for (const o of opened.splice(0)) {
    o.client.close();
    await o.handle.stop('test done');
  }
  dirs.cleanup();
});

/** The instance this test process says hello with (random per process in a real vmm). */
const TEST_INSTANCE = 'lease-channel-test';

/** A one-time session token for vmm `vmmId` (OpenLeaseSession over gRPC). */
async function sessionToken(vmmId: string): Promise<string> {
  return (await unaryCall(client, 'openLeaseSession', { vmmId })).token;
}

/** A raw channel connection: sends requests, collects responses by id. */
class RawChannel {
  readonly framed: FramedSocket;
  readonly responses = new Map<bigint, pb.LeaseChannelResponse>();
  private waiters = new Map<bigint, (r: pb.LeaseChannelResponse) => void>();
  readonly closed: Promise<Error | null>;
  private nextId = 1n;

  constructor(readonly socket: Socket) {
    let onClosed!: (e: Error | null) => void;
    this.closed = new Promise((r) => (onClosed = r));
    this.framed = new FramedSocket(socket, LEASE_CHANNEL_MAX_FRAME_BYTES, {
      frame: (payload) => {
        const res = pb.LeaseChannelResponse.decode(payload);
        this.responses.set(res.id, res);
        this.waiters.get(res.id)?.(res);
      },
      closed: (e) => onClosed(e),
    });
  }

  /** Connects without a hello. */
  static async connectBare(path: string): Promise<RawChannel> {
    const socket = createConnection(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawChannel(socket);
  }

  /** Connects and says hello as vmm `vmmId` (a token from OpenLeaseSession). */
  static async connect(path: string, vmmId = 'vmm-b'): Promise<RawChannel> {
    const ch = await RawChannel.connectBare(path);
    const res = await ch.hello(await sessionToken(vmmId));
    expect(res.result).toEqual({
      $case: 'hello',
      value: { vmmId, pid: process.pid },
    });
    return ch;
  }

  hello(token: string, instance = TEST_INSTANCE): Promise<pb.LeaseChannelResponse> {
    return this.call({ $case: 'hello', value: { token, instance } });
  }

  call(callBody: pb.LeaseChannelRequest['call']): Promise<pb.LeaseChannelResponse> {
    const id = this.nextId++;
    const p = new Promise<pb.LeaseChannelResponse>((r) => this.waiters.set(id, r));
    this.framed.send(pb.LeaseChannelRequest.encode({ id, call: callBody }).finish());
    return p;
  }

  close(): void {
    this.framed.destroy();
  }
}

/** A region leased by `holder` at epoch 1. */
async function leasedRegion(name: string, holder: string): Promise<pb.Region> {
  const { region } = await unaryCall(client, 'createRegion', {
    name,
    size: 1n << 20n,
    kind: pb.RegionKind.REGION_KIND_VOLATILE,
  });
  await unaryCall(client, 'acquireLease', { region: byName(name), holder });
  return region!;
}

describe('memstore lease channel', () => {
  it('listens on <volatile-dir>/memstore-lease.sock (0600) and GetInfo reports it', async () => {
    const path = join(dirs.volatileDir, LEASE_SOCKET_FILE_NAME);
    const info = await unaryCall(client, 'getInfo', {});
    expect(info.leaseChannel).toBe(path);
    expect(handle.leaseChannel?.path).toBe(path);
    const st = lstatSync(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    const catalogId = handle.memstore.catalog.catalogId;
    expect(readdirSync(dirs.volatileDir).sort()).toEqual(
      [leaseArmsFileName(catalogId), LEASE_SOCKET_FILE_NAME, pageSocketFileName(catalogId)].sort(),
    );
  });

  it('on stop leaves alone a file that replaced its socket', async () => {
    const path = handle.leaseChannel!.path;
    renameSync(path, join(dirs.volatileDir, 'moved.sock'));
    writeFileSync(path, 'someone else');
    for (const o of opened.splice(0)) {
      o.client.close();
      await o.handle.stop();
    }
    expect(readFileSync(path, 'utf8')).toBe('someone else');
  });

  it('answers GetRegion, ValidateLease and TransferLease exactly like gRPC', async () => {
    await leasedRegion('ram', 'vmm-a/vm1');
    const ch = await RawChannel.connect(handle.leaseChannel!.path);
    try {
      const getReq = { region: byName('ram') };
      const viaChannel = await ch.call({ $case: 'getRegion', value: getReq });
      const viaGrpc = await unaryCall(client, 'getRegion', getReq);
      expect(viaChannel.result).toEqual({ $case: 'getRegion', value: viaGrpc });

      const validReq = { region: byName('ram'), holder: 'vmm-a/vm1', epoch: 1n };
      const valid = await ch.call({ $case: 'validateLease', value: validReq });
      expect(valid.result).toEqual({
        $case: 'validateLease',
        value: await unaryCall(client, 'validateLease', validReq),
      });
      expect(valid.result?.$case === 'validateLease' && valid.result.value.valid).toBe(true);

      const moved = await ch.call({
        $case: 'transferLease',
        value: {
          region: byName('ram'),
          fromHolder: 'vmm-a/vm1',
          expectedEpoch: 1n,
          toHolder: 'vmm-b/vm1',
        },
      });
      expect(moved.result?.$case).toBe('transferLease');
      const lease = moved.result?.$case === 'transferLease' ? moved.result.value.lease : undefined;
      expect(lease).toMatchObject({ holder: 'vmm-b/vm1', epoch: 2n });
      // The same transfer back over gRPC has the same shape, one epoch on.
      const back = await unaryCall(client, 'transferLease', {
        region: byName('ram'),
        fromHolder: 'vmm-b/vm1',
        expectedEpoch: 2n,
        toHolder: 'vmm-a/vm1',
      });
      expect(Object.keys(back.lease!).sort()).toEqual(Object.keys(lease!).sort());
      expect(back.lease).toMatchObject({ holder: 'vmm-a/vm1', epoch: 3n });
      const { region } = await unaryCall(client, 'getRegion', { region: byName('ram') });
      expect(region?.lease).toMatchObject({ holder: 'vmm-a/vm1', epoch: 3n });
    } finally {
      ch.close();
    }
  });

  it('answers ArmTransfer and ResolveTransfer exactly like gRPC; a flip by CAS moves the lease', async () => {
    await leasedRegion('ram', 'vmm-a/vm1');
    await leasedRegion('disk', 'vmm-a/vm1');
    const ch = await RawChannel.connect(handle.leaseChannel!.path);
    const maps: Mapping<SharedArrayBuffer>[] = [];
    try {
      const armReq = {
        region: byName('ram'),
        fromHolder: 'vmm-a/vm1',
        expectedEpoch: 1n,
        toHolder: 'vmm-b/vm1',
      };
      const armedGrpc = await unaryCall(client, 'armTransfer', armReq);
      expect(armedGrpc).toMatchObject({
        armsPath: handle.memstore.leases.armsFile!.path,
        epoch: 2n,
      });
      // Arming again (over the channel) voids the first arm; same slot, next generation.
      const armed = await ch.call({ $case: 'armTransfer', value: armReq });
      expect(armed.result?.$case).toBe('armTransfer');
      const a = armed.result?.$case === 'armTransfer' ? armed.result.value : undefined;
      expect(a).toEqual({
        ...armedGrpc,
        armedWord: armedGrpc.armedWord + 256,
        flippedWord: armedGrpc.flippedWord + 256,
      });

      // The target's vCPU: one CAS on its own mapping.
      const map = mapFile(a!.armsPath);
      maps.push(map);
      const words = new Int32Array(map.buffer);
      const at = a!.slotOffset / 4;
      expect(
        Atomics.compareExchange(words, at, armedGrpc.armedWord, armedGrpc.flippedWord),
      ).not.toBe(armedGrpc.armedWord);
      expect(Atomics.compareExchange(words, at, a!.armedWord, a!.flippedWord)).toBe(a!.armedWord);

      const resolveReq = { region: byName('ram') };
      const resolved = await ch.call({ $case: 'resolveTransfer', value: resolveReq });
      const resolvedGrpc = await unaryCall(client, 'resolveTransfer', resolveReq);
      expect(resolved.result).toEqual({ $case: 'resolveTransfer', value: resolvedGrpc });
      expect(resolvedGrpc.lease).toMatchObject({ holder: 'vmm-b/vm1', epoch: 2n });
      expect(
        (
          await unaryCall(client, 'validateLease', {
            region: byName('ram'),
            holder: 'vmm-b/vm1',
            epoch: 2n,
          })
        ).valid,
      ).toBe(true);

      // Errors: the same code and message on both paths.
      for (const [req, code] of [
        [armReq, 'LEASE_STALE_EPOCH'], // the lease moved on
        [{ ...armReq, region: byName('disk'), fromHolder: 'vmm-x/vm1' }, 'LEASE_WRONG_HOLDER'],
      ] as const) {
        const viaChannel = await ch.call({ $case: 'armTransfer', value: req });
        const viaGrpc = await failure<RemoteError>(unaryCall(client, 'armTransfer', req));
        expect(viaGrpc.code).toBe(code);
        const err = viaChannel.result?.$case === 'error' ? viaChannel.result.value : undefined;
        expect(err?.code).toBe(code);
        expect(`armTransfer: ${err!.message}`).toBe(viaGrpc.message);
      }
      const missing = await ch.call({
        $case: 'resolveTransfer',
        value: { region: byName('nope') },
      });
      expect(missing.result).toMatchObject({ $case: 'error', value: { code: 'REGION_NOT_FOUND' } });
    } finally {
      for (const x of maps) x.close();
      ch.close();
    }
  });

  it('ArmTransfer of a persistent region: LEASE_ARM_UNSUPPORTED (FAILED_PRECONDITION) on both paths', async () => {
    await unaryCall(client, 'createRegion', {
      name: 'disk',
      size: 1n << 20n,
      kind: pb.RegionKind.REGION_KIND_PERSISTENT,
    });
    await unaryCall(client, 'acquireLease', { region: byName('disk'), holder: 'vmm-a/vm1' });
    const ch = await RawChannel.connect(handle.leaseChannel!.path);
    try {
      const req = {
        region: byName('disk'),
        fromHolder: 'vmm-a/vm1',
        expectedEpoch: 1n,
        toHolder: 'vmm-b/vm1',
      };
      const viaGrpc = await failure<RemoteError>(unaryCall(client, 'armTransfer', req));
      expect(viaGrpc).toMatchObject({
        code: 'LEASE_ARM_UNSUPPORTED',
        status: grpc.status.FAILED_PRECONDITION,
      });
      const viaChannel = await ch.call({ $case: 'armTransfer', value: req });
      expect(viaChannel.result).toMatchObject({
        $case: 'error',
        value: { code: 'LEASE_ARM_UNSUPPORTED' },
      });
    } finally {
      ch.close();
    }
  });

  it('fails with the stable code and the message the gRPC call fails with', async () => {
    await leasedRegion('ram', 'vmm-a/vm1');
    const ch = await RawChannel.connect(handle.leaseChannel!.path);
    try {
      const stale = {
        region: byName('ram'),
        fromHolder: 'vmm-a/vm1',
        expectedEpoch: 7n,
        toHolder: 'vmm-b/vm1',
      };
      const viaChannel = await ch.call({ $case: 'transferLease', value: stale });
      const viaGrpc = await failure<RemoteError>(unaryCall(client, 'transferLease', stale));
      expect(viaGrpc.code).toBe('LEASE_STALE_EPOCH');
      expect(viaChannel.result).toEqual({
        $case: 'error',
        value: { code: 'LEASE_STALE_EPOCH', message: expect.any(String) as string },
      });
      const err = viaChannel.result?.$case === 'error' ? viaChannel.result.value : undefined;
      expect(`transferLease: ${err!.message}`).toBe(viaGrpc.message);

      const missing = await ch.call({ $case: 'getRegion', value: { region: byName('nope') } });
      expect(missing.result).toMatchObject({ $case: 'error', value: { code: 'REGION_NOT_FOUND' } });
      const empty = await ch.call({
        $case: 'validateLease',
        value: { region: undefined, holder: 'vmm-a/vm1', epoch: 1n },
      });
      expect(empty.result).toMatchObject({
        $case: 'error',
        value: { code: 'REGION_INVALID_ARGUMENT' },
      });
      const none = await ch.call(undefined);
      expect(none.result).toMatchObject({
        $case: 'error',
        value: { code: 'SERVICE_UNIMPLEMENTED' },
      });
    } finally {
      ch.close();
    }
  });

  it('answers pipelined requests, each by its id', async () => {
    await leasedRegion('ram', 'vmm-a/vm1');
    const ch = await RawChannel.connect(handle.leaseChannel!.path);
    try {
      const all = await Promise.all(
        Array.from({ length: 20 }, (_, k) =>
          ch.call({
            $case: 'validateLease',
            value: { region: byName('ram'), holder: 'vmm-a/vm1', epoch: BigInt(k % 2) },
          }),
        ),
      );
      all.forEach((r, k) => {
        expect(r.id).toBe(BigInt(k + 2)); // id 1 was the hello
        expect(r.result?.$case === 'validateLease' && r.result.value.valid).toBe(k % 2 === 1);
      });
    } finally {
      ch.close();
    }
  });

  it('closes only the connection that sends garbage, and keeps serving', async () => {
    await leasedRegion('ram', 'vmm-a/vm1');
    const good = await RawChannel.connect(handle.leaseChannel!.path);
    try {
      // A frame that does not decode (field 1 with the invalid wire type 7).
      const bad = await RawChannel.connectBare(handle.leaseChannel!.path);
      bad.framed.send(new Uint8Array([0x0f, 0x00, 0x01]));
      await bad.closed;
      expect(bad.responses.size).toBe(0);
      // A length prefix beyond the 1 MiB limit.
      const huge = await RawChannel.connectBare(handle.leaseChannel!.path);
      huge.socket.write(frameHeader(LEASE_CHANNEL_MAX_FRAME_BYTES + 1));
      await huge.closed;
      expect(log.filter((e) => e.level === 'warn').map((e) => e.msg)).toEqual([
        expect.stringContaining('undecodable request'),
        expect.stringContaining('broken framing'),
      ]);
      const res = await good.call({ $case: 'getRegion', value: { region: byName('ram') } });
      expect(res.result?.$case).toBe('getRegion');
      const fresh = await RawChannel.connect(handle.leaseChannel!.path);
      const again = await fresh.call({ $case: 'getRegion', value: { region: byName('ram') } });
      expect(again.result?.$case).toBe('getRegion');
      fresh.close();
    } finally {
      good.close();
    }
  });

  it('is disabled with --lease-socket off', async () => {
    const other = makeTempDirs();
    try {
      const off = await startMemstore(
        memstoreConfig({
          port: 0,
          'state-dir': other.stateDir,
          'volatile-dir': other.volatileDir,
          'lease-socket': 'off',
        }),
      );
      const c = createClient(pb.MemstoreServiceClient, off.address, channelCredentials(null));
      opened.push({ handle: off, client: c });
      expect(off.leaseChannel).toBeNull();
      expect((await unaryCall(c, 'getInfo', {})).leaseChannel).toBe('');
      const catalogId = off.memstore.catalog.catalogId;
      expect(readdirSync(other.volatileDir).sort()).toEqual(
        [leaseArmsFileName(catalogId), pageSocketFileName(catalogId)].sort(),
      );
    } finally {
      for (const o of opened.splice(1)) {
        o.client.close();
        await o.handle.stop();
      }
      other.cleanup();
    }
  });

  it('removes its socket on stop, replaces a stale one on start, and is no orphan region', async () => {
    const path = handle.leaseChannel!.path;
    // A stale socket: a second name for the live socket's inode, left once its server is gone.
    const stale = join(dirs.volatileDir, 'stale.sock');
    linkSync(path, stale);
    for (const o of opened.splice(0)) {
      o.client.close();
      await o.handle.stop();
    }
    expect(existsSync(path)).toBe(false);
    linkSync(stale, path);
    const rec = recordingLogger();
    ({ handle, client } = await start({}, rec.logger));
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(lstatSync(path).ino).not.toBe(lstatSync(stale).ino);
    const report = rec.entries.find((e) => e.msg === 'reconciliation done');
    expect(report?.fields).toMatchObject({ orphansRemoved: 0 });
    const ch = await RawChannel.connect(path);
    const res = await ch.call({ $case: 'getRegion', value: { region: byName('nope') } });
    expect(res.result?.$case).toBe('error');
    ch.close();
  });

  it('a second memstore on the same volatile dir runs without a channel; explicit paths must be free', async () => {
    const second = makeTempDirs();
    try {
      // Another catalog sharing the volatile directory: same default socket path.
      const rec = recordingLogger();
      const { handle: h2, client: c2 } = await start({ 'state-dir': second.stateDir }, rec.logger);
      expect(h2.leaseChannel).toBeNull();
      expect((await unaryCall(c2, 'getInfo', {})).leaseChannel).toBe('');
      expect(rec.entries.some((e) => e.level === 'warn' && /another memstore/.test(e.msg))).toBe(
        true,
      );
      // The first one still serves on its socket.
      const ch = await RawChannel.connect(handle.leaseChannel!.path);
      const res = await ch.call({ $case: 'getRegion', value: { region: byName('nope') } });
      expect(res.result?.$case).toBe('error');
      ch.close();
      const o2 = opened.pop()!;
      o2.client.close();
      await o2.handle.stop();
      expect(lstatSync(handle.leaseChannel!.path).isSocket()).toBe(true);

      // Given explicitly, a busy path or a path that is not a socket fails the start.
      const third = makeTempDirs();
      try {
        await expect(
          startMemstore(
            memstoreConfig({
              port: 0,
              'state-dir': third.stateDir,
              'volatile-dir': third.volatileDir,
              'lease-socket': handle.leaseChannel!.path,
            }),
          ),
        ).rejects.toMatchObject({
          code: 'SERVICE_INVALID_CONFIG',
          message: expect.stringContaining('another process') as string,
        });
        const plain = join(dirs.volatileDir, 'plain-file');
        writeFileSync(plain, 'x');
        await expect(
          startMemstore(
            memstoreConfig({
              port: 0,
              'state-dir': third.stateDir,
              'volatile-dir': third.volatileDir,
              'lease-socket': plain,
            }),
          ),
        ).rejects.toMatchObject({ code: 'SERVICE_INVALID_CONFIG' });
        expect(existsSync(plain)).toBe(true);
      } finally {
        third.cleanup();
      }
    } finally {
      second.cleanup();
    }
  });

  it('drops its connections on stop', async () => {
    const ch = await RawChannel.connectBare(handle.leaseChannel!.path);
    await new Promise((r) => setTimeout(r, 10));
    expect(handle.leaseChannel!.connections).toBe(1);
    for (const o of opened.splice(0)) {
      o.client.close();
      await o.handle.stop();
    }
    await ch.closed;
  });
});

describe('lease channel sessions', () => {
  const errorOf = (r: pb.LeaseChannelResponse) =>
    r.result?.$case === 'error' ? r.result.value : undefined;

  it('refuses every call before a hello (SERVICE_UNAUTHENTICATED) and ends the connection', async () => {
    await leasedRegion('ram', 'vmm-a/vm1');
    const ch = await RawChannel.connectBare(handle.leaseChannel!.path);
    const res = await ch.call({ $case: 'getRegion', value: { region: byName('ram') } });
    expect(errorOf(res)).toMatchObject({
      code: 'SERVICE_UNAUTHENTICATED',
      message: expect.stringContaining('OpenLeaseSession') as string,
    });
    expect(await ch.closed).toBeNull(); // a clean end after the answer
    // Nothing moved: a transfer sent before a hello is refused the same way.
    const again = await RawChannel.connectBare(handle.leaseChannel!.path);
    const moved = await again.call({
      $case: 'transferLease',
      value: {
        region: byName('ram'),
        fromHolder: 'vmm-a/vm1',
        expectedEpoch: 1n,
        toHolder: 'vmm-b/vm1',
      },
    });
    expect(errorOf(moved)?.code).toBe('SERVICE_UNAUTHENTICATED');
    const { region } = await unaryCall(client, 'getRegion', { region: byName('ram') });
    expect(region?.lease).toMatchObject({ holder: 'vmm-a/vm1', epoch: 1n });
  });

  it('takes a token once, before it expires; a connection says hello once', async () => {
    const token = await sessionToken('vmm-b');
    const first = await RawChannel.connectBare(handle.leaseChannel!.path);
    expect((await first.hello(token)).result?.$case).toBe('hello');
    // The same connection again: refused, connection ended.
    const twice = await first.hello(await sessionToken('vmm-b'));
    expect(errorOf(twice)?.code).toBe('SERVICE_INVALID_ARGUMENT');
    await first.closed;
    // The same token on another connection: refused.
    const reuse = await RawChannel.connectBare(handle.leaseChannel!.path);
    expect(errorOf(await reuse.hello(token))?.code).toBe('SERVICE_UNAUTHENTICATED');
    await reuse.closed;
    const forged = await RawChannel.connectBare(handle.leaseChannel!.path);
    expect(errorOf(await forged.hello('not-a-token'))?.code).toBe('SERVICE_UNAUTHENTICATED');
    await forged.closed;
    const badInstance = await RawChannel.connectBare(handle.leaseChannel!.path);
    expect(errorOf(await badInstance.hello(await sessionToken('vmm-b'), 'x'))?.code).toBe(
      'SERVICE_INVALID_ARGUMENT',
    );
    await badInstance.closed;
    // A vmm id that cannot prefix a holder gets no token.
    await expect(unaryCall(client, 'openLeaseSession', { vmmId: 'a/b' })).rejects.toMatchObject({
      code: 'REGION_INVALID_ARGUMENT',
    });
    const res = await unaryCall(client, 'openLeaseSession', { vmmId: 'vmm-b' });
    expect(res.leaseChannel).toBe(handle.leaseChannel!.path);
    expect(Number(res.expiresAt!.seconds) * 1000).toBeGreaterThan(Date.now() - 1000);
  });

  it('binds the connection to the process that connected: GetRegion reports the holder alive', async () => {
    const { region } = await unaryCall(client, 'createRegion', {
      name: 'ram',
      size: 1n << 20n,
      kind: pb.RegionKind.REGION_KIND_VOLATILE,
    });
    const ch = await RawChannel.connect(handle.leaseChannel!.path, 'vmm-t');
    try {
      await unaryCall(client, 'acquireLease', { region: byName('ram'), holder: 'vmm-t/vm1' });
      const got = await unaryCall(client, 'getRegion', { region: byName('ram') });
      expect(got.region?.holder).toMatchObject({
        liveness: pb.HolderLiveness.HOLDER_LIVENESS_ALIVE,
        vmmId: 'vmm-t',
        pid: process.pid,
        connected: true,
      });
      expect(handle.memstore.catalog.getHolderProcess('vmm-t')).toMatchObject({
        pid: process.pid,
        instance: TEST_INSTANCE,
        goneAt: null,
      });
      // The holder is alive: an operator may not take its lease.
      await expect(
        unaryCall(client, 'forceReleaseLease', { region: byName('ram') }),
      ).rejects.toMatchObject({
        code: 'LEASE_HOLDER_ALIVE',
        status: grpc.status.FAILED_PRECONDITION,
      });
      expect(region?.holder).toBeUndefined(); // not leased when created
    } finally {
      ch.close();
    }
    // Closing the connection is not dying: this process still runs.
    await new Promise((r) => setTimeout(r, 150));
    const after = await unaryCall(client, 'getRegion', { region: byName('ram') });
    expect(after.region?.lease?.holder).toBe('vmm-t/vm1');
    expect(after.region?.holder).toMatchObject({
      liveness: pb.HolderLiveness.HOLDER_LIVENESS_ALIVE,
      connected: false,
    });
  });

  it('a vmm acts on the channel only for its own holders (it may hand its own lease back)', async () => {
    await leasedRegion('ram', 'vmm-a/vm1');
    await leasedRegion('mine', 'vmm-b/vm1');
    const ch = await RawChannel.connect(handle.leaseChannel!.path, 'vmm-b');
    try {
      const steal = {
        region: byName('ram'),
        fromHolder: 'vmm-a/vm1',
        expectedEpoch: 1n,
        toHolder: 'vmm-c/vm1',
      };
      for (const $case of ['transferLease', 'armTransfer'] as const) {
        const res = await ch.call({ $case, value: steal } as pb.LeaseChannelRequest['call']);
        expect(errorOf(res)).toMatchObject({
          code: 'LEASE_FOREIGN_HOLDER',
          message: expect.stringContaining('vmm-b/<vm>') as string,
        });
      }
      // Handing back its own lease to another vmm (a failed migration target) is allowed.
      const back = await ch.call({
        $case: 'transferLease',
        value: {
          region: byName('mine'),
          fromHolder: 'vmm-b/vm1',
          expectedEpoch: 1n,
          toHolder: 'vmm-a/vm2',
        },
      });
      expect(back.result?.$case).toBe('transferLease');
      // Taking a lease to itself (a migration target) is allowed.
      const take = await ch.call({
        $case: 'transferLease',
        value: { ...steal, toHolder: 'vmm-b/vm1' },
      });
      expect(take.result?.$case).toBe('transferLease');
    } finally {
      ch.close();
    }
  });

  it('refuses a peer of another user (not root) at its hello', async () => {
    const path = join(dirs.volatileDir, 'other-user.sock');
    const rec = recordingLogger();
    const server = await startLeaseChannel({
      memstore: handle.memstore,
      logger: rec.logger,
      path,
      peerOf: () => ({ pid: process.pid, uid: 4242, gid: 4242 }),
    });
    try {
      const ch = await RawChannel.connectBare(path);
      const res = await ch.hello(await sessionToken('vmm-b'));
      expect(errorOf(res)).toMatchObject({
        code: 'SERVICE_PERMISSION_DENIED',
        message: expect.stringContaining('user 4242') as string,
      });
      await ch.closed;
    } finally {
      await server.close();
    }
  });

  it.skipIf(process.getuid?.() !== 0)(
    'a process of another uid cannot say hello (a setuid child; needs root)',
    async () => {
      // The socket must be reachable by the other user for the hello to arrive at all.
      const dir = mkdtempSync('/tmp/handoff-lease-uid-');
      chmodSync(dir, 0o755);
      const path = join(dir, 'lease.sock');
      const server = await startLeaseChannel({ memstore: handle.memstore, logger: log_, path });
      chmodSync(path, 0o666);
      try {
        const hello = pb.LeaseChannelRequest.encode({
          id: 1n,
          call: {
            $case: 'hello',
            value: { token: await sessionToken('vmm-b'), instance: TEST_INSTANCE },
          },
        }).finish();
        const child = spawn(
          process.execPath,
          [
            '-e',
            `const s = require('node:net').createConnection(process.argv[1]);
             const frame = Buffer.from(process.argv[2], 'hex');
             const head = Buffer.alloc(4); head.writeUInt32BE(frame.length);
             s.on('connect', () => s.write(Buffer.concat([head, frame])));
             let got = Buffer.alloc(0);
             s.on('data', (d) => (got = Buffer.concat([got, d])));
             s.on('close', () => { process.stdout.write(got.subarray(4).toString('hex')); });`,
            path,
            Buffer.from(hello).toString('hex'),
          ],
          { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'pipe'] },
        );
        let stdout = '';
        let stderr = '';
        child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
        child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        const status = await new Promise<number | null>((resolve) => child.on('exit', resolve));
        expect(status, stderr).toBe(0);
        const res = pb.LeaseChannelResponse.decode(Buffer.from(stdout, 'hex'));
        expect(errorOf(res)).toMatchObject({
          code: 'SERVICE_PERMISSION_DENIED',
          message: expect.stringContaining('user 65534') as string,
        });
        expect(handle.memstore.catalog.getHolderProcess('vmm-b')).toBeUndefined();
      } finally {
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

describe('lease channel test helpers', () => {
  it('a stale socket file accepts no connection', async () => {
    const path = join(dirs.volatileDir, 'probe.sock');
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(path, r));
    const copy = join(dirs.volatileDir, 'probe-copy.sock');
    linkSync(path, copy);
    await new Promise<void>((r) => srv.close(() => r()));
    await expect(RawChannel.connectBare(copy)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
