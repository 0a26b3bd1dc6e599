import * as grpc from '@grpc/grpc-js';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memstore as mspb, migrator as mpb, vmm as vpb, vmmStream } from '@handoff/proto';
import { resolveCapabilities } from '@handoff/qapi';
import { capabilitiesToWire } from '@handoff/qapi/wire';
import {
  channelCredentials,
  checkHealth,
  createClient,
  loadTls,
  unaryCall,
  type PeerIdentity,
} from '@handoff/service';
import { ensurePki } from '@handoff/service/pki';
import { testCredentials, testIdentityFiles } from '@handoff/service/testing';
import {
  memstoreDirs,
  regionNamed,
  startMemstoreProcess,
  type MemstoreDirs,
  type MemstoreUnderTest,
} from './helpers/memstore.js';
import { headerFor, migrateVmCall, rawIncoming, refused } from './helpers/migration.js';
import { listServicesByReflection } from './helpers/reflection.js';
import { serviceMain, startService, type TestService } from './helpers/services.js';
import { startVmmProcess, vmmCall, vmSpec, type VmmUnderTest } from './helpers/vmm.js';

const run = promisify(execFile);

/**
 * The attacks mutual TLS and the roles must stop, against a real cluster of processes (memstore,
 * migrator, vmm-a, vmm-b), each serving with its certificate from the run's test PKI: callers
 * without a certificate, with one from another CA, over plaintext, or of the wrong role; a vmm
 * speaking for another; a stream presenting a token issued for another source.
 */
describe('mutual TLS and roles between the services', () => {
  let dirs: MemstoreDirs;
  let memstore: MemstoreUnderTest;
  let migrator: TestService;
  let a: VmmUnderTest;
  let b: VmmUnderTest;
  let foreignDir: string;
  const clients: grpc.Client[] = [];

  /** Every service, with the address a client dials and a call any role may make. */
  const services = () => [
    { name: 'memstore', address: memstore.process.address, role: 'memstore' as const },
    { name: 'migrator', address: migrator.address, role: 'migrator' as const },
    { name: 'vmm', address: a.process.address, role: 'vmm' as const },
  ];

  /** GetInfo on the service at `address` (every service has one; each role may call it). */
  function getInfo(name: string, address: string, creds: grpc.ChannelCredentials) {
    const ctor = {
      memstore: mspb.MemstoreServiceClient,
      migrator: mpb.MigratorServiceClient,
      vmm: vpb.VmmServiceClient,
    }[name]!;
    const c = createClient(ctor as typeof mspb.MemstoreServiceClient, address, creds);
    clients.push(c);
    return unaryCall(c, 'getInfo', {}, { deadlineMs: 3000 });
  }

  const as = async (who: PeerIdentity, serverRole: PeerIdentity['role']) =>
    testCredentials(who, { serverRole });

  beforeAll(async () => {
    dirs = memstoreDirs();
    memstore = await startMemstoreProcess(dirs);
    migrator = await startService('migrator', ['--heartbeat-interval-ms', '200']);
    [a, b] = (await Promise.all(
      ['vmm-a', 'vmm-b'].map((id) =>
        startVmmProcess([
          '--id',
          id,
          '--memstore',
          memstore.process.address,
          '--migrator',
          migrator.address,
        ]),
      ),
    )) as [VmmUnderTest, VmmUnderTest];
    foreignDir = mkdtempSync(join(tmpdir(), 'handoff-foreign-pki-'));
    await ensurePki(foreignDir);
    const mg = createClient(mpb.MigratorServiceClient, migrator.address, migrator.credentials);
    clients.push(mg);
    for (let i = 0; i < 100; i++) {
      const { vmms } = await unaryCall(mg, 'listVmms', {});
      if (vmms.filter((v) => v.alive).length === 2) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all([a?.stop(), b?.stop()]);
    await migrator?.stop();
    await memstore?.stop();
    dirs?.cleanup();
    rmSync(foreignDir, { recursive: true, force: true });
  });

  it('answers a caller without a certificate UNAUTHENTICATED on every service, reflection included, but its health check', async () => {
    const { ca } = await testIdentityFiles({ id: 'operator', role: 'operator' });
    // Trusts the cluster's CA, presents no certificate.
    const anonymous = grpc.credentials.createSsl(readFileSync(ca));
    for (const s of services()) {
      const err = await refused(getInfo(s.name, s.address, anonymous));
      expect(err.status, s.name).toBe(grpc.status.UNAUTHENTICATED);
      expect(err.code).toBe('SERVICE_UNAUTHENTICATED');
      expect((await checkHealth(s.address, anonymous)).status, s.name).toBe('SERVING');
      await expect(listServicesByReflection(s.address, anonymous)).rejects.toMatchObject({
        code: grpc.status.UNAUTHENTICATED,
      });
    }
  });

  it('answers a certificate from another CA UNAUTHENTICATED, and talks to no plaintext client', async () => {
    const ourCa = readFileSync((await testIdentityFiles({ id: 'operator', role: 'operator' })).ca);
    for (const s of services()) {
      // The same name and role (the foreign PKI has them all), issued by a CA nobody trusts.
      const id = s.role === 'vmm' ? 'vmm-a' : s.role;
      const foreign = loadTls({ 'tls-dir': foreignDir }, id, { role: s.role })!;
      const forged = grpc.credentials.createSsl(ourCa, foreign.key, foreign.cert);
      const err = await refused(getInfo(s.name, s.address, forged));
      expect(err.status, s.name).toBe(grpc.status.UNAUTHENTICATED);
      const plain = await refused(getInfo(s.name, s.address, channelCredentials(null)));
      expect(plain.status, s.name).toBe(grpc.status.UNAVAILABLE);
    }
  });

  it('lets no operator or migrator take, move or drop a lease: only vmms hold leases', async () => {
    const vmmClient = memstore.client; // test-vmm, role vmm
    await unaryCall(vmmClient, 'createRegion', {
      name: 'guarded',
      size: 1n << 20n,
      kind: mspb.RegionKind.REGION_KIND_VOLATILE,
    });
    const region = regionNamed('guarded');
    const held = (await unaryCall(vmmClient, 'acquireLease', { region, holder: 'test-vmm/vm1' }))
      .lease!;
    for (const who of [
      { id: 'operator', role: 'operator' },
      { id: 'migrator', role: 'migrator' },
    ] as const) {
      const c = createClient(
        mspb.MemstoreServiceClient,
        memstore.process.address,
        await as(who, 'memstore'),
      );
      clients.push(c);
      const attempts = [
        unaryCall(c, 'transferLease', {
          region,
          fromHolder: held.holder,
          expectedEpoch: held.epoch,
          toHolder: 'thief/vm1',
        }),
        unaryCall(c, 'releaseLease', { region, holder: held.holder, epoch: held.epoch }),
        unaryCall(c, 'acquireLease', { region, holder: 'thief/vm1' }),
        unaryCall(c, 'armTransfer', {
          region,
          fromHolder: held.holder,
          expectedEpoch: held.epoch,
          toHolder: 'thief/vm1',
        }),
      ];
      for (const p of attempts) {
        const err = await refused(p);
        expect(err.status, who.role).toBe(grpc.status.PERMISSION_DENIED);
        expect(err.message).toMatch(/needs the role vmm/);
      }
      // What they may do: look at regions.
      expect((await unaryCall(c, 'getRegion', { region })).region!.lease!.holder).toBe(
        'test-vmm/vm1',
      );
    }
    const after = (await unaryCall(vmmClient, 'getRegion', { region })).region!.lease!;
    expect({ holder: after.holder, epoch: after.epoch }).toEqual({
      holder: 'test-vmm/vm1',
      epoch: held.epoch,
    });
  });

  it("keeps ForceReleaseLease the operator's and OpenLeaseSession a vmm's", async () => {
    const region = regionNamed('guarded');
    const asVmm = memstore.client; // test-vmm
    const asOperator = createClient(
      mspb.MemstoreServiceClient,
      memstore.process.address,
      await as({ id: 'operator', role: 'operator' }, 'memstore'),
    );
    clients.push(asOperator);
    const force = await refused(unaryCall(asVmm, 'forceReleaseLease', { region }));
    expect(force.status).toBe(grpc.status.PERMISSION_DENIED);
    const session = await refused(unaryCall(asOperator, 'openLeaseSession', { vmmId: 'vmm-a' }));
    expect(session.status).toBe(grpc.status.PERMISSION_DENIED);
  });

  it('lets a vmm register and report only under its own id, so no one re-points another vmm', async () => {
    const asA = createClient(
      mpb.MigratorServiceClient,
      migrator.address,
      await as({ id: 'vmm-a', role: 'vmm' }, 'migrator'),
    );
    const asOperator = createClient(
      mpb.MigratorServiceClient,
      migrator.address,
      migrator.credentials,
    );
    clients.push(asA, asOperator);
    const evil = {
      id: 'vmm-b',
      address: '127.0.0.1:1',
      version: 'x',
      vmCount: 0,
      vmsVersion: 0n,
      vms: undefined,
      hostId: '',
      memstoreAddress: '',
    };
    const err = await refused(unaryCall(asA, 'registerVmm', evil));
    expect(err.status).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.message).toMatch(/names vmm-a/);
    const report = await refused(
      unaryCall(asA, 'reportVms', { vmmId: 'vmm-b', vms: { version: 99n, vms: [] } }),
    );
    expect(report.status).toBe(grpc.status.PERMISSION_DENIED);
    // An operator registers nothing at all; a rogue vmm id gets no certificate from the CA.
    const op = await refused(unaryCall(asOperator, 'registerVmm', { ...evil, id: 'vmm-rogue' }));
    expect(op.status).toBe(grpc.status.PERMISSION_DENIED);
    const { vmms } = await unaryCall(asOperator, 'listVmms', {});
    expect(vmms.find((v) => v.id === 'vmm-b')?.address).toBe(b.process.address);
    expect(vmms.map((v) => v.id)).not.toContain('vmm-rogue');
    // Only operators list the vmms and run jobs.
    expect((await refused(unaryCall(asA, 'listVmms', {}))).status).toBe(
      grpc.status.PERMISSION_DENIED,
    );
  });

  it('lets only the migrator prepare and start migrations, and only a vmm open a migration stream', async () => {
    const op = createClient(
      vpb.VmmServiceClient,
      b.process.address,
      await as({ id: 'operator', role: 'operator' }, 'vmm'),
    );
    clients.push(op);
    const prep = {
      name: 'nope',
      jobId: 'j',
      spec: undefined,
      capabilities: [],
      sourceVmm: 'vmm-a',
    };
    expect((await refused(unaryCall(op, 'prepareIncoming', prep))).status).toBe(
      grpc.status.PERMISSION_DENIED,
    );
    const migrate = await refused(
      migrateVmCall(op, {
        name: 'nope',
        jobId: 'j',
        targetAddress: a.process.address,
        token: 't',
        capabilities: [],
        parameters: undefined,
        targetDataAddress: '',
        targetHandoffSlot: '',
      }),
    );
    expect(migrate.status).toBe(grpc.status.PERMISSION_DENIED);
    // The operator opens the migration stream: refused before a frame is read.
    const stream = createClient(
      vmmStream.MigrationServiceClient,
      b.process.address,
      await as({ id: 'operator', role: 'operator' }, 'vmm'),
    );
    clients.push(stream);
    const call = stream.incoming();
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      call.on('status', resolve);
      call.on('error', () => undefined);
      call.on('data', () => undefined);
      call.write(headerFor('t', vmSpec('nope', 'ab'), []));
    });
    expect(status.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(status.details).toMatch(/Incoming is not allowed for operator operator/);
    // A PrepareIncoming that names no source is refused on a TLS vmm.
    const missing = await refused(vmmCall(b.client, 'prepareIncoming', { ...prep, sourceVmm: '' }));
    expect(missing.code).toBe('SERVICE_INVALID_ARGUMENT');
    expect(missing.message).toMatch(/source_vmm/);
  });

  it('accepts a migration token only on a stream from the source vmm PrepareIncoming named', async () => {
    const name = 'bound';
    await vmmCall(a.client, 'createVm', {
      spec: vmSpec(name, 'ab', { memory: 1024 * 1024 }),
      start: true,
    });
    const capabilities = capabilitiesToWire(resolveCapabilities({}));
    const prep = await vmmCall(b.client, 'prepareIncoming', {
      name,
      jobId: 'bound',
      spec: undefined,
      capabilities,
      sourceVmm: 'vmm-a',
    });
    // vmm-x holds a valid vmm certificate, but the token is vmm-a's.
    const spec = (await vmmCall(a.client, 'getVm', { name })).vm!.spec!;
    const s = rawIncoming(b.process.address);
    s.send(headerFor(prep.token, spec, [], { source: 'vmm-a' }));
    const out = await s.outcome();
    s.close();
    expect(out.error?.code).toBe('MIGRATION_BAD_TOKEN');
    expect(out.error?.message).toMatch(/issued for a stream from vmm-a, not from vmm-x/);
    // The token stays valid for vmm-a, whose migration goes through with it (over gRPC, where
    // the stream's caller is its certificate).
    const info = await migrateVmCall(a.client, {
      name,
      jobId: 'bound',
      targetAddress: prep.address,
      token: prep.token,
      capabilities,
      parameters: undefined,
      targetDataAddress: '',
      targetHandoffSlot: '',
    });
    expect(info.status).toBe('completed');
    expect(info.route?.transport).toBe('grpc');
    await vmmCall(b.client, 'destroyVm', { name });
  });

  it('keeps the data channel socket in a folder only this user can enter, the socket 0600', async () => {
    const prep = await vmmCall(b.client, 'prepareIncoming', {
      name: 'socket-probe',
      jobId: 'p',
      spec: undefined,
      capabilities: [],
      sourceVmm: 'vmm-a',
    });
    expect(prep.dataAddress).toMatch(/^unix:\//);
    const socket = prep.dataAddress.slice('unix:'.length);
    expect(statSync(dirname(socket)).mode & 0o777).toBe(0o700);
    expect(statSync(socket).mode & 0o777).toBe(0o600);
  });

  it('refuses to start without certificates or --insecure, or with a certificate naming another vmm', async () => {
    const bare = (await run(process.execPath, [serviceMain('migrator'), '--port', '0']).catch(
      (e: unknown) => e,
    )) as { code: number; stdout: string };
    expect(bare.code).toBe(1);
    expect(bare.stdout).toContain('migrator has no certificate: give --tls-dir DIR');
    const files = await testIdentityFiles({ id: 'vmm-a', role: 'vmm' });
    const other = (await run(process.execPath, [
      serviceMain('vmm'),
      '--port',
      '0',
      '--id',
      'vmm-z',
      '--tls-ca',
      files.ca,
      '--tls-cert',
      files.cert,
      '--tls-key',
      files.key,
    ]).catch((e: unknown) => e)) as { code: number; stdout: string };
    expect(other.code).toBe(1);
    expect(other.stdout).toContain("names vmm-a, not vmm-z: an instance's id must be the CN");
  });
});
