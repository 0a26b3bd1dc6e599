import { migrator as pb, serviceNames } from '@handoff/proto';
import { openAccess } from '@handoff/service/testing';
import {
  ServiceError,
  channelCredentials,
  createLogger,
  startServer,
  unary,
  type RunningServer,
} from '@handoff/service';
import { afterEach, describe, expect, it } from 'vitest';
import type { VmInfo } from '../model/types.js';
import { startHeartbeat } from './heartbeat.js';

const logger = createLogger({ name: 'test', level: 'silent', format: 'json' });

/** What the fake migrator received, in order. */
type Received =
  | { kind: 'register'; vmsVersion: number; vms: string[] | undefined }
  | { kind: 'report'; version: number; vms: string[] };

/** A migrator that records registrations and reports; `wanted`/`refuseReports` script it. */
async function fakeMigrator() {
  const received: Received[] = [];
  /** The host fields of every registration, in order. */
  const hosts: { hostId: string; memstoreAddress: string }[] = [];
  const state = { wanted: false, refuseReports: false };
  const names = (set: pb.HostedVms) => set.vms.map((v) => `${v.name}:${v.spec?.guest}`);
  const server: RunningServer = await startServer({
    name: 'migrator',
    host: '127.0.0.1',
    port: 0,
    logger,
    tls: null,
    shutdownTimeoutMs: 100,
    services: [
      {
        name: serviceNames.migrator,
        definition: pb.MigratorServiceService,
        implementation: {
          registerVmm: unary(logger, (req: pb.RegisterVmmRequest) => {
            hosts.push({ hostId: req.hostId, memstoreAddress: req.memstoreAddress });
            received.push({
              kind: 'register',
              vmsVersion: Number(req.vmsVersion),
              vms: req.vms === undefined ? undefined : names(req.vms),
            });
            const vmsWanted = state.wanted;
            state.wanted = false;
            return { heartbeatIntervalMs: 30, vmsWanted };
          }),
          reportVms: unary(logger, (req: pb.ReportVmsRequest) => {
            if (state.refuseReports) throw new ServiceError('SERVICE_UNAVAILABLE', 'not now');
            received.push({
              kind: 'report',
              version: Number(req.vms!.version),
              vms: names(req.vms!),
            });
            return {};
          }),
        } as never,
        access: openAccess(pb.MigratorServiceService),
      },
    ],
  });
  return { server, received, hosts, state };
}

/** A VM host stand-in: a list of VMs and the change listeners. */
function fakeHost() {
  const vms: VmInfo[] = [];
  const listeners = new Set<() => void>();
  return {
    add(name: string) {
      vms.push({
        name,
        state: 'running',
        spec: { name, guest: 'ab', ram: [], args: {} },
      } as unknown as VmInfo);
      for (const l of listeners) l();
    },
    announcement: (address: string, hostId = 'host-1', memstoreAddress = '127.0.0.1:7100') => ({
      id: 'vmm-a',
      address,
      hostId,
      memstoreAddress,
      vmCount: () => vms.length,
      vms: () => vms,
      onVmsChanged: (l: () => void) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
    }),
  };
}

const until = async (what: () => boolean, timeoutMs = 3000) => {
  const deadline = Date.now() + timeoutMs;
  while (!what()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('heartbeat and VM reports', () => {
  let stop: (() => void) | undefined;
  let server: RunningServer | undefined;
  afterEach(async () => {
    stop?.();
    await server?.shutdown('test over');
  });

  it('registers with the VM set, then beats with its version only and reports each change', async () => {
    const m = await fakeMigrator();
    server = m.server;
    const host = fakeHost();
    host.add('vm1');
    stop = startHeartbeat(
      { address: m.server.address, credentials: channelCredentials(null) },
      host.announcement('vmm-a:1'),
      logger,
    );
    await until(() => m.received.length >= 3);
    expect(m.received.slice(0, 3)).toEqual([
      { kind: 'register', vmsVersion: 1, vms: ['vm1:ab'] },
      { kind: 'register', vmsVersion: 1, vms: undefined },
      { kind: 'register', vmsVersion: 1, vms: undefined },
    ]);
    host.add('vm2');
    await until(() => m.received.some((r) => r.kind === 'report'));
    expect(m.received.find((r) => r.kind === 'report')).toEqual({
      kind: 'report',
      version: 2,
      vms: ['vm1:ab', 'vm2:ab'],
    });
    const n = m.received.length;
    await until(() => m.received.length >= n + 2);
    expect(m.received.slice(n)).toContainEqual({
      kind: 'register',
      vmsVersion: 2,
      vms: undefined,
    });
    expect(m.received.filter((r) => r.kind === 'report')).toHaveLength(1);
  });

  it("sends its host id and its host's memstore address with every registration", async () => {
    const m = await fakeMigrator();
    server = m.server;
    stop = startHeartbeat(
      { address: m.server.address, credentials: channelCredentials(null) },
      fakeHost().announcement('vmm-c:1', 'host-2', '127.0.0.1:7300'),
      logger,
    );
    await until(() => m.hosts.length >= 2);
    expect(m.hosts.slice(0, 2)).toEqual([
      { hostId: 'host-2', memstoreAddress: '127.0.0.1:7300' },
      { hostId: 'host-2', memstoreAddress: '127.0.0.1:7300' },
    ]);
  });

  it('reports at once when a heartbeat answer asks for the set', async () => {
    const m = await fakeMigrator();
    server = m.server;
    const host = fakeHost();
    stop = startHeartbeat(
      { address: m.server.address, credentials: channelCredentials(null) },
      host.announcement('vmm-a:1'),
      logger,
    );
    await until(() => m.received.length >= 2);
    m.state.wanted = true; // e.g. the migrator restarted
    await until(() => m.received.some((r) => r.kind === 'report'));
    expect(m.received.find((r) => r.kind === 'report')).toEqual({
      kind: 'report',
      version: 1,
      vms: [],
    });
  });

  it('sends the set with the next heartbeat when a report failed', async () => {
    const m = await fakeMigrator();
    server = m.server;
    const host = fakeHost();
    stop = startHeartbeat(
      { address: m.server.address, credentials: channelCredentials(null) },
      host.announcement('vmm-a:1'),
      logger,
    );
    await until(() => m.received.length >= 1);
    m.state.refuseReports = true;
    host.add('vm1');
    await until(() =>
      m.received.some((r) => r.kind === 'register' && r.vms !== undefined && r.vmsVersion === 2),
    );
    expect(m.received.filter((r) => r.kind === 'report')).toEqual([]);
  });
});
