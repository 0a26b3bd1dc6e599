import { memstore as pb } from '@handoff/proto';
import { createClient, unaryCall, type PeerIdentity } from '@handoff/service';
import { testCredentials, testTlsDir } from '@handoff/service/testing';
import { memstoreConfig, startMemstore, type MemstoreHandle } from '@handoff/memstore';
import { LeaseChannelClient } from '@handoff/memstore/testing';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import {
  memstoreDirs,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './memstore.js';

/**
 * Helpers of the lazy-region tests: two memstores (the source host's as a process it can kill,
 * the target host's in this process), each with a memstore certificate of its own, a source
 * region filled with a random pattern, and a raw lease-channel client for FetchPages.
 */

/** `--tls-*` flags (and config fields) giving a memstore the certificate of `id`. */
export async function memstoreTls(id: string): Promise<{
  args: string[];
  config: { 'tls-ca': string; 'tls-cert': string; 'tls-key': string };
}> {
  const identity: PeerIdentity = { id, role: 'memstore' };
  const dir = await testTlsDir(identity);
  const config = {
    'tls-ca': join(dir, 'ca.pem'),
    'tls-cert': join(dir, `${id}.pem`),
    'tls-key': join(dir, `${id}.key`),
  };
  return {
    args: [
      '--tls-ca',
      config['tls-ca'],
      '--tls-cert',
      config['tls-cert'],
      '--tls-key',
      config['tls-key'],
    ],
    config,
  };
}

/** The source host's memstore (a process) with its directories. */
export interface SourceHost {
  readonly dirs: MemstoreDirs;
  ms: MemstoreUnderTest;
  /** Starts it again on the same directories (after a kill). */
  restart(env?: NodeJS.ProcessEnv): Promise<void>;
}

/** Starts memstore-1 (the source host's), optionally with the test page delay. */
export async function startSourceHost(env: NodeJS.ProcessEnv = {}): Promise<SourceHost> {
  const dirs = memstoreDirs();
  const { args } = await memstoreTls('memstore-1');
  const host: SourceHost = {
    dirs,
    ms: await startMemstoreProcess(dirs, args, env),
    restart: async (again = {}) => {
      host.ms = await startMemstoreProcess(dirs, args, again);
    },
  };
  return host;
}

/** The target host's memstore (in this process) and clients of it. */
export interface TargetHost {
  readonly dirs: MemstoreDirs;
  readonly handle: MemstoreHandle;
  /** A vmm's client (CreateLazyRegion, StartLazyFill, GetRegion). */
  readonly vmm: pb.MemstoreServiceClient;
  /** The migrator's client (RecoverLazyRegion). */
  readonly migrator: pb.MemstoreServiceClient;
  stop(): Promise<void>;
}

/** Starts memstore-2 (the target host's) in this process, on `dirs` when it restarts. */
export async function startTargetHost(
  dirs: MemstoreDirs = memstoreDirs(),
  opts: { metricsPort?: number } = {},
): Promise<TargetHost> {
  const { config } = await memstoreTls('memstore-2');
  const handle = await startMemstore(
    memstoreConfig({
      port: 0,
      'state-dir': dirs.stateDir,
      'volatile-dir': dirs.volatileDir,
      'persistent-dir': dirs.persistentDir,
      'max-region-size': '2G',
      'shutdown-timeout-ms': 1000,
      ...(opts.metricsPort !== undefined ? { 'metrics-port': opts.metricsPort } : {}),
      ...config,
    }),
  );
  const vmm = createClient(
    pb.MemstoreServiceClient,
    handle.address,
    await testCredentials({ id: 'test-vmm', role: 'vmm' }, { serverRole: 'memstore' }),
  );
  const migrator = createClient(
    pb.MemstoreServiceClient,
    handle.address,
    await testCredentials({ id: 'test-migrator', role: 'migrator' }, { serverRole: 'memstore' }),
  );
  return {
    dirs,
    handle,
    vmm,
    migrator,
    stop: async () => {
      vmm.close();
      migrator.close();
      await handle.stop('test done');
    },
  };
}

/** A region of the source host, leased by a (pretend) source VM and filled with a pattern. */
export interface SourceRegion {
  readonly region: pb.Region;
  readonly epoch: bigint;
  readonly data: Buffer;
  /** The RemoteRegion naming it. */
  readonly remote: pb.RemoteRegion;
}

/** Creates `name` on the source host, leases it to `test-vmm/<name>`, writes random bytes. */
export async function sourceRegion(
  source: SourceHost,
  name: string,
  size: number,
): Promise<SourceRegion> {
  const client = source.ms.client;
  const { region } = await unaryCall(client, 'createRegion', {
    name,
    size: BigInt(size),
    kind: pb.RegionKind.REGION_KIND_VOLATILE,
  });
  const { lease } = await unaryCall(client, 'acquireLease', {
    region: { selector: { $case: 'id', value: region!.id } },
    holder: `test-vmm/${name}`,
  });
  const data = randomBytes(size);
  // No zero page: a missing page must never pass for a present one.
  for (let p = 0; p < size; p += 4096) data[p] = 1 + (p % 255);
  const fd = openSync(region!.path, 'r+');
  try {
    writeSync(fd, data, 0, size, 0);
  } finally {
    closeSync(fd);
  }
  return {
    region: region!,
    epoch: lease!.epoch,
    data,
    remote: {
      memstore: source.ms.process.address,
      regionId: region!.id,
      identity: region!.identity,
      size: BigInt(size),
      epoch: lease!.epoch,
    },
  };
}

/** The bytes of a file. */
export function fileBytes(path: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  const fd = openSync(path, 'r');
  try {
    let at = 0;
    while (at < size) {
      const n = readSync(fd, out, at, size - at, at);
      if (n === 0) break;
      at += n;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

/** Polls `fn` until it returns a value (not undefined) or `timeoutMs` passes. */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A lease-channel connection of a vmm to memstore-2 (hello said), for FetchPages. */
export const LeaseChannel = {
  async open(target: TargetHost): Promise<LeaseChannelClient> {
    const { token } = await unaryCall(target.vmm, 'openLeaseSession', { vmmId: '' });
    return LeaseChannelClient.open(
      target.handle.leaseChannel!.path,
      token,
      `lazy-test-${randomBytes(4).toString('hex')}`,
    );
  },
};
export type LeaseChannel = LeaseChannelClient;

/** Whether `p` is still pending after `ms`. */
export async function stillPending(p: Promise<unknown>, ms: number): Promise<boolean> {
  const marker = Symbol('pending');
  const r = await Promise.race([p, new Promise((res) => setTimeout(() => res(marker), ms))]);
  return r === marker;
}
