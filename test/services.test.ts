import * as grpc from '@grpc/grpc-js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrator, vmm } from '@handoff/proto';
import { checkHealth, createClient, RemoteError, unaryCall } from '@handoff/service';
import { listServicesByReflection } from './helpers/reflection.js';
import { serviceMain, startService, type TestService } from './helpers/services.js';

const run = promisify(execFile);

describe('migrator and vmm instances', () => {
  let mg: TestService;
  let vmmA: TestService;
  let vmmB: TestService;

  beforeAll(async () => {
    mg = await startService('migrator', [
      '--heartbeat-interval-ms',
      '200',
      '--vmm-expiry-ms',
      '1500',
    ]);
    [vmmA, vmmB] = await Promise.all([
      startService('vmm', ['--id', 'vmm-a', '--migrator', mg.address]),
      startService('vmm', ['--id', 'vmm-b', '--migrator', mg.address]),
    ]);
  });

  afterAll(async () => {
    await Promise.all([vmmA?.stop(), vmmB?.stop()]);
    await mg?.stop();
  });

  it('registers every vmm instance with the migrator, which lists them alive', async () => {
    const client = createClient(migrator.MigratorServiceClient, mg.address, mg.credentials);
    try {
      let ids: string[] = [];
      for (let i = 0; i < 50 && ids.length < 2; i++) {
        const res = await unaryCall(client, 'listVmms', {});
        ids = res.vmms.filter((v) => v.alive).map((v) => v.id);
        if (ids.length < 2) await new Promise((r) => setTimeout(r, 100));
      }
      expect(ids).toEqual(['vmm-a', 'vmm-b']);
      const res = await unaryCall(client, 'listVmms', {});
      expect(res.vmms.find((v) => v.id === 'vmm-a')?.address).toBe(vmmA.address);
    } finally {
      client.close();
    }
  });

  it('serves health and reflection on every service', async () => {
    expect((await checkHealth(mg.address, mg.credentials)).status).toBe('SERVING');
    expect(
      (await checkHealth(vmmA.address, vmmA.credentials, 'handoff.vmm.v1.VmmService')).status,
    ).toBe('SERVING');
    expect(await listServicesByReflection(mg.address, mg.credentials)).toEqual([
      'grpc.health.v1.Health',
      'handoff.migrator.v1.MigratorService',
    ]);
    expect(await listServicesByReflection(vmmA.address, vmmA.credentials)).toEqual([
      'grpc.health.v1.Health',
      'handoff.vmm.v1.MigrationService',
      'handoff.vmm.v1.VmmService',
    ]);
  });

  it('answers a save of a VM nobody runs with NOT_FOUND and a message, never fake success', async () => {
    const client = createClient(vmm.VmmServiceClient, vmmA.address, vmmA.credentials);
    const mc = createClient(migrator.MigratorServiceClient, mg.address, mg.credentials);
    try {
      const err = await unaryCall(client, 'saveVm', {
        name: 'x',
        snapshot: 's',
        full: false,
        stop: false,
        template: false,
        jobId: '',
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteError);
      expect((err as RemoteError).status).toBe(grpc.status.NOT_FOUND);
      expect((err as RemoteError).code).toBe('VMM_VM_NOT_FOUND');
      // the migrator's Save is a job: a VM no instance runs is its NOT_FOUND
      const err2 = await unaryCall(mc, 'save', {
        vm: 'x',
        snapshot: 's',
        full: false,
        stop: false,
      }).catch((e: unknown) => e);
      expect((err2 as RemoteError).code).toBe('MIGRATOR_VM_NOT_FOUND');
      expect((err2 as RemoteError).status).toBe(grpc.status.NOT_FOUND);
      const info = await unaryCall(client, 'getInfo', {});
      expect(info.vmmId).toBe('vmm-a');
    } finally {
      client.close();
      mc.close();
    }
  });

  it('reports a vmm instance that stopped heartbeating as not alive', async () => {
    const late = await startService('vmm', ['--id', 'vmm-late', '--migrator', mg.address]);
    const client = createClient(migrator.MigratorServiceClient, mg.address, mg.credentials);
    try {
      const alive = async () =>
        (await unaryCall(client, 'listVmms', {})).vmms.find((v) => v.id === 'vmm-late')?.alive;
      for (let i = 0; i < 50 && (await alive()) !== true; i++)
        await new Promise((r) => setTimeout(r, 100));
      expect(await alive()).toBe(true);
      expect(await late.stop()).toBe(0);
      for (let i = 0; i < 60 && (await alive()) !== false; i++)
        await new Promise((r) => setTimeout(r, 100));
      expect(await alive()).toBe(false);
    } finally {
      client.close();
    }
  });
});

describe('service executables', () => {
  it('explain their options with --help, including the HANDOFF_* variables', async () => {
    const { stdout } = await run(process.execPath, [serviceMain('vmm'), '--help']);
    expect(stdout).toContain('--migrator <string>');
    expect(stdout).toContain('HANDOFF_MIGRATOR_ADDR');
    expect(stdout).toContain('HANDOFF_VMM_PORT');
  });

  it('exit with status 2 and a clear message on bad configuration', async () => {
    const err = (await run(process.execPath, [serviceMain('migrator'), '--port', 'abc']).catch(
      (e: unknown) => e,
    )) as { code: number; stderr: string };
    expect(err.code).toBe(2);
    expect(err.stderr).toContain('--port=abc is not a number');
  });

  it('stop gracefully on SIGTERM with exit code 0', async () => {
    const m = await startService('migrator');
    expect(await m.stop()).toBe(0);
    expect(m.output()).toContain('shutting down');
  });
});
