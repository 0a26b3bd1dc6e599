import * as grpc from '@grpc/grpc-js';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrator, serviceNames } from '@handoff/proto';
import { createClient, unaryCall } from '../client.js';
import { ServiceError } from '../errors.js';
import { createLogger } from '../logger.js';
import { startServer, unary, type RunningServer } from '../server.js';
import { openAccess, testCredentials, testMaterial } from '../testing/tls.js';
import { ANY_ROLE } from '../trust/access.js';
import { parseExposition, sampleValue, type MetricSample } from './exposition.js';
import { startMetricsServer, type MetricsServer } from './http.js';
import { ServiceMetrics } from './registry.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });
const MIGRATOR = serviceNames.migrator;

async function scrape(endpoint: MetricsServer): Promise<MetricSample[]> {
  const res = await fetch(`http://${endpoint.address}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return parseExposition(await res.text());
}

function calls(samples: MetricSample[], method: string, code: string): number {
  return sampleValue(samples, 'handoff_grpc_server_calls_total', {
    service: 'test',
    grpc_service: MIGRATOR,
    method,
    code,
  });
}

describe('service metrics over HTTP', () => {
  let server: RunningServer;
  let endpoint: MetricsServer;
  const clients: grpc.Client[] = [];
  const client = (creds: grpc.ChannelCredentials) => {
    const c = createClient(migrator.MigratorServiceClient, server.address, creds);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    const metrics = new ServiceMetrics('test');
    const impl: Partial<migrator.MigratorServiceServer> = {
      getInfo: unary(logger, () => ({ version: 'v', vmmCount: 0, activeJobs: 0 })),
      listVmms: unary(logger, () => {
        throw new ServiceError('SERVICE_INVALID_ARGUMENT', 'bad request; fix it');
      }),
      getJob: unary(logger, () => new Promise(() => undefined)), // never answers
      migrate: unary(logger, () => ({ job: undefined })),
    };
    server = await startServer({
      name: 'test',
      host: '127.0.0.1',
      port: 0,
      logger,
      tls: await testMaterial({ id: 'migrator', role: 'migrator' }),
      metrics,
      shutdownTimeoutMs: 200,
      services: [
        {
          name: MIGRATOR,
          definition: migrator.MigratorServiceService,
          implementation: impl as grpc.UntypedServiceImplementation,
          access: {
            ...openAccess(migrator.MigratorServiceService, ['operator']),
            GetInfo: ANY_ROLE,
            ListVmms: ['operator'],
            Migrate: ['vmm'],
          },
        },
      ],
    });
    endpoint = await startMetricsServer({
      name: 'test',
      host: '127.0.0.1',
      port: await freePort(),
      metrics,
      logger,
    });
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await server.shutdown();
    await endpoint.close();
  });

  it('counts answered, failed, refused and timed-out calls by method and code', async () => {
    const operator = client(await testCredentials({ id: 'operator', role: 'operator' }));
    const ca = (await testMaterial({ id: 'operator', role: 'operator' })).ca;
    const anonymous = client(grpc.credentials.createSsl(ca));
    const before = await scrape(endpoint);

    await unaryCall(operator, 'getInfo', {});
    await unaryCall(operator, 'getInfo', {});
    await expect(unaryCall(operator, 'listVmms', {})).rejects.toThrow(/bad request/);
    await expect(unaryCall(anonymous, 'getInfo', {})).rejects.toThrow(/certificate/i);
    await expect(
      unaryCall(operator, 'migrate', migrator.MigrateRequest.fromPartial({ vm: 'x' })),
    ).rejects.toThrow(/may not|role/);
    await expect(unaryCall(operator, 'getJob', { id: 'j' }, { deadlineMs: 100 })).rejects.toThrow();
    await expect
      .poll(async () => calls(await scrape(endpoint), 'GetJob', 'DEADLINE_EXCEEDED'))
      .toBe(1);

    const after = await scrape(endpoint);
    const moved = (method: string, code: string) =>
      calls(after, method, code) - calls(before, method, code);
    expect(moved('GetInfo', 'OK')).toBe(2);
    expect(moved('ListVmms', 'INVALID_ARGUMENT')).toBe(1);
    expect(moved('GetInfo', 'UNAUTHENTICATED')).toBe(1);
    expect(moved('Migrate', 'PERMISSION_DENIED')).toBe(1);
    expect(
      sampleValue(after, 'handoff_grpc_server_call_duration_seconds_count', {
        grpc_service: MIGRATOR,
        method: 'GetInfo',
      }),
    ).toBeGreaterThanOrEqual(3);
  });

  it('serves process metrics with the service label', async () => {
    const samples = await scrape(endpoint);
    const rss = samples.find((s) => s.name === 'process_resident_memory_bytes');
    expect(rss?.labels.service).toBe('test');
    expect(rss?.value).toBeGreaterThan(0);
  });

  it('answers 404 beside /metrics', async () => {
    expect((await fetch(`http://${endpoint.address}/`)).status).toBe(404);
  });

  it('refuses a port in use or out of range with a message naming the port', async () => {
    const metrics = new ServiceMetrics('test', { processMetrics: false });
    await expect(
      startMetricsServer({ name: 'test', host: '127.0.0.1', port: endpoint.port, metrics, logger }),
    ).rejects.toThrow(`test cannot serve metrics on 127.0.0.1:${endpoint.port} (EADDRINUSE)`);
    await expect(
      startMetricsServer({ name: 'test', host: '127.0.0.1', port: 70000, metrics, logger }),
    ).rejects.toThrow('--metrics-port 70000 is not a TCP port');
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}
