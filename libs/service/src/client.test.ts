import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrator, serviceNames } from '@handoff/proto';
import { createClient, streamCall } from './client.js';
import { RemoteError, ServiceError } from './errors.js';
import { createLogger } from './logger.js';
import { serverStream, startServer, type RunningServer } from './server.js';
import { openAccess } from './testing/tls.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });

/** WatchJob as a scripted server stream: the id says what it does. */
async function scripted(
  req: migrator.WatchJobRequest,
  call: grpc.ServerWritableStream<migrator.WatchJobRequest, migrator.WatchJobResponse>,
): Promise<void> {
  const send = (id: string) => call.write({ job: migrator.Job.fromPartial({ id }) });
  if (req.id === 'three') for (const id of ['a', 'b', 'c']) send(id);
  if (req.id === 'fail') {
    send('a');
    throw new ServiceError('SERVICE_INVALID_ARGUMENT', 'the job is bad; fix it');
  }
  if (req.id === 'slow') await new Promise((r) => setTimeout(r, 2000));
}

describe('streamCall', () => {
  let server: RunningServer;
  let client: migrator.MigratorServiceClient;

  beforeAll(async () => {
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
          implementation: { watchJob: serverStream(logger, scripted) } as never,
          access: openAccess(migrator.MigratorServiceService),
        },
      ],
    });
    client = createClient(
      migrator.MigratorServiceClient,
      server.address,
      grpc.credentials.createInsecure(),
    );
  });

  afterAll(async () => {
    client.close();
    await server.shutdown();
  });

  it('hands every message to onMessage and resolves with the last one', async () => {
    const seen: string[] = [];
    const last = await streamCall(
      client,
      'watchJob',
      { id: 'three' },
      {
        onMessage: (m) => seen.push(m.job!.id),
      },
    );
    expect(seen).toEqual(['a', 'b', 'c']);
    expect(last.job!.id).toBe('c');
  });

  it("rejects with the server's code after the messages it sent", async () => {
    const seen: string[] = [];
    const err = await streamCall(
      client,
      'watchJob',
      { id: 'fail' },
      {
        onMessage: (m) => seen.push(m.job!.id),
      },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({ code: 'SERVICE_INVALID_ARGUMENT' });
    expect((err as Error).message).toMatch(/^watchJob: the job is bad; fix it/);
  });

  it('rejects a stream that ended without a message, and one past its deadline', async () => {
    await expect(streamCall(client, 'watchJob', { id: 'none' })).rejects.toMatchObject({
      code: 'GRPC_INTERNAL',
      message: expect.stringMatching(/without a message/),
    });
    await expect(
      streamCall(client, 'watchJob', { id: 'slow' }, { deadlineMs: 100 }),
    ).rejects.toMatchObject({ code: 'GRPC_DEADLINE_EXCEEDED' });
  });
});
