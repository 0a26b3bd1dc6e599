import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrator, serviceNames } from '@handoff/proto';
import { checkHealth, createClient, unaryCall } from './client.js';
import { RemoteError, ServiceError } from './errors.js';
import { createLogger } from './logger.js';
import { startServer, unary, unavailable, type RunningServer } from './server.js';
import { openAccess } from './testing/tls.js';

const plaintext = grpc.credentials.createInsecure();
const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });

describe('startServer', () => {
  let server: RunningServer;
  let calls = 0;

  beforeAll(async () => {
    const impl: Partial<migrator.MigratorServiceServer> = {
      getInfo: unary(logger, async () => {
        calls++;
        return { version: 'v', vmmCount: calls, activeJobs: 0 };
      }),
      listVmms: unary(logger, () => {
        throw new ServiceError('SERVICE_INVALID_ARGUMENT', 'bad request; fix it');
      }),
      getJob: unary(logger, () => {
        throw new Error('unexpected');
      }),
      migrate: unavailable(
        'MigratorService',
        'Migrate',
        'SERVICE_UNIMPLEMENTED',
        'a later release',
      ),
    };
    server = await startServer({
      name: 'test',
      host: '127.0.0.1',
      port: 0,
      logger,
      tls: null,
      shutdownTimeoutMs: 500,
      services: [
        {
          name: serviceNames.migrator,
          definition: migrator.MigratorServiceService,
          implementation: impl as grpc.UntypedServiceImplementation,
          access: openAccess(migrator.MigratorServiceService),
        },
      ],
    });
  });

  afterAll(() => server.shutdown());

  it('serves async handlers and reports SERVING for itself and each service', async () => {
    const c = createClient(migrator.MigratorServiceClient, server.address, plaintext);
    try {
      expect((await unaryCall(c, 'getInfo', {})).vmmCount).toBe(1);
      expect((await checkHealth(server.address, plaintext)).status).toBe('SERVING');
      expect((await checkHealth(server.address, plaintext, serviceNames.migrator)).status).toBe(
        'SERVING',
      );
      expect((await checkHealth(server.address, plaintext, 'no.such.Service')).status).toBe(
        'SERVICE_UNKNOWN',
      );
    } finally {
      c.close();
    }
  });

  it('maps thrown errors to status codes with their stable code', async () => {
    const c = createClient(migrator.MigratorServiceClient, server.address, plaintext);
    try {
      const bad = (await unaryCall(c, 'listVmms', {}).catch((e: unknown) => e)) as RemoteError;
      expect([bad.status, bad.code, bad.message]).toEqual([
        grpc.status.INVALID_ARGUMENT,
        'SERVICE_INVALID_ARGUMENT',
        'listVmms: bad request; fix it',
      ]);
      const internal = (await unaryCall(c, 'getJob', { id: 'x' }).catch(
        (e: unknown) => e,
      )) as RemoteError;
      expect([internal.status, internal.code]).toEqual([grpc.status.INTERNAL, 'SERVICE_INTERNAL']);
      const later = (await unaryCall(c, 'migrate', {
        vm: '',
        targetVmm: '',
        capabilities: [],
        parameters: undefined,
      }).catch((e: unknown) => e)) as RemoteError;
      expect([later.status, later.code]).toEqual([
        grpc.status.UNIMPLEMENTED,
        'SERVICE_UNIMPLEMENTED',
      ]);
    } finally {
      c.close();
    }
  });

  it('applies a deadline to every call', async () => {
    const c = createClient(migrator.MigratorServiceClient, '127.0.0.1:1', plaintext);
    try {
      const started = Date.now();
      const err = (await unaryCall(c, 'getInfo', {}, { deadlineMs: 300 }).catch(
        (e: unknown) => e,
      )) as RemoteError;
      expect(err).toBeInstanceOf(RemoteError);
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      c.close();
    }
  });

  it('goes NOT_SERVING and refuses calls after shutdown', async () => {
    const other = await startServer({
      name: 't2',
      host: '127.0.0.1',
      port: 0,
      logger,
      tls: null,
      services: [],
    });
    expect((await checkHealth(other.address, plaintext)).status).toBe('SERVING');
    await other.shutdown();
    await other.shutdown();
    expect((await checkHealth(other.address, plaintext, '', 500)).status).toBe('UNREACHABLE');
  });

  it('announces the receive window it was asked for (HTTP/2 SETTINGS), 64 KiB otherwise', async () => {
    const windowOf = async (receiveWindowBytes?: number): Promise<number | undefined> => {
      const srv = await startServer({
        name: 't3',
        host: '127.0.0.1',
        port: 0,
        logger,
        tls: null,
        services: [],
        ...(receiveWindowBytes !== undefined ? { receiveWindowBytes } : {}),
      });
      const session = http2.connect(`http://${srv.address}`);
      try {
        const settings = await new Promise<http2.Settings>((resolve, reject) => {
          session.once('error', reject);
          // The window arrives in a SETTINGS frame after the session's first one.
          const check = (): void => {
            if (
              session.remoteSettings.initialWindowSize !== 65535 ||
              receiveWindowBytes === undefined
            ) {
              resolve(session.remoteSettings);
            }
          };
          session.on('remoteSettings', check);
          setTimeout(() => resolve(session.remoteSettings), 2000);
        });
        return settings.initialWindowSize;
      } finally {
        session.destroy();
        await srv.shutdown();
      }
    };
    expect(await windowOf(4 * 1024 * 1024)).toBe(4 * 1024 * 1024);
    expect(await windowOf()).toBe(65535);
  });
});
