import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from './logger.js';
import { parseProbeArgs, probeHealth, ProbeUsageError } from './health-probe.js';
import { startServer, type RunningServer } from './server.js';
import { testMaterial, testTlsDir } from './testing/tls.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });

describe('parseProbeArgs', () => {
  it('takes the address, the CA and a deadline', () => {
    expect(
      parseProbeArgs(['--ca', '/t/ca.pem', '--timeout-ms', '500', '127.0.0.1:7100'], {}),
    ).toEqual({
      address: '127.0.0.1:7100',
      caFile: '/t/ca.pem',
      service: '',
      timeoutMs: 500,
    });
    expect(parseProbeArgs(['--insecure', '[::1]:7000'], {})).toMatchObject({ caFile: null });
  });

  it('finds the CA in HANDOFF_PROBE_CA or HANDOFF_PROBE_TLS_DIR', () => {
    expect(parseProbeArgs(['h:1'], { HANDOFF_PROBE_CA: '/a/ca.pem' })).toMatchObject({
      caFile: '/a/ca.pem',
    });
    expect(parseProbeArgs(['h:1'], { HANDOFF_PROBE_TLS_DIR: '/tls/' })).toMatchObject({
      caFile: '/tls/ca.pem',
    });
  });

  it('refuses what it cannot use, saying what is wrong', () => {
    expect(() => parseProbeArgs(['h:1'], {})).toThrow(/--ca FILE/);
    expect(() => parseProbeArgs(['--ca', 'x', 'nohost'], {})).toThrow(ProbeUsageError);
    expect(() => parseProbeArgs(['--ca', 'x', 'h:1', 'h:2'], {})).toThrow(/one address only/);
    expect(() => parseProbeArgs(['--insecure', '--ca', 'x', 'h:1'], {})).toThrow(/exclude/);
    expect(() => parseProbeArgs(['--ca', 'x', '--timeout-ms', '0', 'h:1'], {})).toThrow(/positive/);
    expect(() => parseProbeArgs(['--nope'], {})).toThrow(ProbeUsageError);
  });
});

describe('probeHealth', () => {
  let server: RunningServer;
  let ca: string;

  beforeAll(async () => {
    const identity = { id: 'memstore', role: 'memstore' } as const;
    ca = join(await testTlsDir(identity), 'ca.pem');
    server = await startServer({
      name: 'probe-target',
      host: '127.0.0.1',
      port: 0,
      logger,
      tls: await testMaterial(identity),
      services: [],
    });
  });
  afterAll(() => server.shutdown());

  it('passes for a TLS service that serves, with the CA and no client certificate', async () => {
    const res = await probeHealth({
      address: server.address,
      caFile: ca,
      service: '',
      timeoutMs: 2000,
    });
    expect(res).toMatchObject({ status: 'SERVING', exitCode: 0 });
  });

  it('fails plaintext against TLS, a missing CA file and a closed port, saying why', async () => {
    const plain = await probeHealth({
      address: server.address,
      caFile: null,
      service: '',
      timeoutMs: 1000,
    });
    expect(plain).toMatchObject({ status: 'UNREACHABLE', exitCode: 1 });
    const noCa = await probeHealth({
      address: server.address,
      caFile: '/nonexistent/ca.pem',
      service: '',
      timeoutMs: 1000,
    });
    expect(noCa.exitCode).toBe(1);
    expect(noCa.line).toMatch(/cannot use the CA \/nonexistent\/ca.pem/);
    const closed = await probeHealth({
      address: '127.0.0.1:1',
      caFile: ca,
      service: '',
      timeoutMs: 1000,
    });
    expect(closed).toMatchObject({ status: 'UNREACHABLE', exitCode: 1 });
  });
});
