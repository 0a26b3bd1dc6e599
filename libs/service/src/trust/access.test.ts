import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrator, serviceNames } from '@handoff/proto';
import { checkHealth, createClient, unaryCall } from '../client.js';
import { RemoteError } from '../errors.js';
import { createLogger } from '../logger.js';
import { startServer, unary, type RunningServer, type ServiceRegistration } from '../server.js';
import { openAccess, testCredentials, testMaterial } from '../testing/tls.js';
import { ANY_ROLE, callerOf, checkAccessTable, type AccessTable } from './access.js';
import type { Caller } from './identity.js';
import { loadTls } from './material.js';
import { ensurePki } from './pki.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });

/** GetInfo for everyone, ListVmms for operators, RegisterVmm for vmms; answers with its caller. */
function registration(seen: Caller[]): ServiceRegistration {
  const access: AccessTable = {
    ...openAccess(migrator.MigratorServiceService, ['vmm']),
    GetInfo: ANY_ROLE,
    ListVmms: ['operator'],
  };
  const impl: Partial<migrator.MigratorServiceServer> = {
    getInfo: unary(logger, (_req, call) => {
      seen.push(callerOf(call));
      return { version: 'v', vmmCount: 0, activeJobs: 0 };
    }),
    listVmms: unary(logger, () => ({ vmms: [] })),
  };
  return {
    name: serviceNames.migrator,
    definition: migrator.MigratorServiceService,
    implementation: impl as grpc.UntypedServiceImplementation,
    access,
  };
}

async function refusal(p: Promise<unknown>): Promise<RemoteError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof RemoteError) return err;
    throw err;
  }
  throw new Error('the call succeeded but should have been refused');
}

describe('startServer with mutual TLS and an access table', () => {
  let server: RunningServer;
  const seen: Caller[] = [];
  let foreignDir: string;
  const clients: grpc.Client[] = [];
  const client = (creds: grpc.ChannelCredentials) => {
    const c = createClient(migrator.MigratorServiceClient, server.address, creds);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    server = await startServer({
      name: 'test',
      host: '127.0.0.1',
      port: 0,
      logger,
      tls: await testMaterial({ id: 'migrator', role: 'migrator' }),
      shutdownTimeoutMs: 500,
      services: [registration(seen)],
    });
    foreignDir = mkdtempSync(join(tmpdir(), 'handoff-foreign-ca-'));
    await ensurePki(foreignDir, [{ id: 'operator', role: 'operator' }]);
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await server.shutdown();
    rmSync(foreignDir, { recursive: true, force: true });
  });

  it('lets a caller of an allowed role through and tells the handler who it is', async () => {
    const op = client(await testCredentials({ id: 'operator', role: 'operator' }));
    await unaryCall(op, 'getInfo', {});
    await unaryCall(op, 'listVmms', {});
    expect(seen.at(-1)).toEqual({ secure: true, identity: { id: 'operator', role: 'operator' } });
  });

  it('refuses a caller of another role with PERMISSION_DENIED before the handler runs', async () => {
    const vmm = client(await testCredentials({ id: 'vmm-a', role: 'vmm' }));
    const err = await refusal(unaryCall(vmm, 'listVmms', {}));
    expect(err.status).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.code).toBe('SERVICE_PERMISSION_DENIED');
    expect(err.message).toMatch(/not allowed for vmm vmm-a; it needs the role operator/);
  });

  it('refuses a client without a certificate with UNAUTHENTICATED, but answers its health check', async () => {
    const ca = (await testMaterial({ id: 'operator', role: 'operator' })).ca;
    const anonymous = grpc.credentials.createSsl(ca);
    const err = await refusal(unaryCall(client(anonymous), 'getInfo', {}));
    expect(err.status).toBe(grpc.status.UNAUTHENTICATED);
    expect(err.code).toBe('SERVICE_UNAUTHENTICATED');
    expect((await checkHealth(server.address, anonymous)).status).toBe('SERVING');
  });

  it('refuses a certificate another CA issued with UNAUTHENTICATED', async () => {
    const ours = await testMaterial({ id: 'operator', role: 'operator' });
    const foreign = loadTls({ 'tls-dir': foreignDir }, 'operator', { role: 'operator' })!;
    // Trusts our server, presents a certificate of the right name and role from another CA.
    const creds = grpc.credentials.createSsl(ours.ca, foreign.key, foreign.cert);
    const err = await refusal(unaryCall(client(creds), 'getInfo', {}));
    expect(err.status).toBe(grpc.status.UNAUTHENTICATED);
  });

  it('does not talk to a plaintext client at all', async () => {
    const err = await refusal(
      unaryCall(client(grpc.credentials.createInsecure()), 'getInfo', {}, { deadlineMs: 1500 }),
    );
    expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]).toContain(err.status);
  });

  it('a client refuses a server whose certificate names another role than it expects', async () => {
    const m = await testMaterial({ id: 'operator', role: 'operator' });
    const { channelCredentials } = await import('./credentials.js');
    const err = await refusal(
      unaryCall(
        client(channelCredentials(m, { serverRole: 'memstore' })),
        'getInfo',
        {},
        { deadlineMs: 1500 },
      ),
    );
    expect(err.status).toBe(grpc.status.UNAVAILABLE);
    const ok = client(channelCredentials(m, { serverRole: 'migrator' }));
    await unaryCall(ok, 'getInfo', {});
  });
});

describe('access tables', () => {
  it('a table must name every method, and only methods the service has', () => {
    const full = openAccess(migrator.MigratorServiceService);
    expect(() => checkAccessTable('m', migrator.MigratorServiceService, full)).not.toThrow();
    const { GetInfo: _, ...missing } = full;
    expect(() => checkAccessTable('m', migrator.MigratorServiceService, missing)).toThrow(
      /no access entry for GetInfo/,
    );
    expect(() =>
      checkAccessTable('m', migrator.MigratorServiceService, { ...full, Teleport: ['vmm'] }),
    ).toThrow(/entries for methods it lacks: Teleport/);
  });

  it('startServer refuses to start a service with a method no entry names', async () => {
    const reg = registration([]);
    const { ListJobs: _, ...access } = reg.access;
    await expect(
      startServer({
        name: 'test',
        host: '127.0.0.1',
        port: 0,
        logger,
        tls: null,
        services: [{ ...reg, access }],
      }),
    ).rejects.toThrow(/no access entry for ListJobs/);
  });

  it('a plaintext (--insecure) server lets every call pass as the insecure caller', async () => {
    const seen: Caller[] = [];
    const server = await startServer({
      name: 'test',
      host: '127.0.0.1',
      port: 0,
      logger,
      tls: null,
      services: [registration(seen)],
    });
    const c = createClient(
      migrator.MigratorServiceClient,
      server.address,
      grpc.credentials.createInsecure(),
    );
    try {
      await unaryCall(c, 'getInfo', {});
      await unaryCall(c, 'listVmms', {});
      expect(seen).toEqual([{ secure: false }]);
    } finally {
      c.close();
      await server.shutdown();
    }
  });
});
