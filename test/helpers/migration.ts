import type * as grpc from '@grpc/grpc-js';
import { closeSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs';
import { connect } from 'node:net';
import type { vmm as pb } from '@handoff/proto';
import { migration, vmm as vmmPb, vmmStream } from '@handoff/proto';
import { resolveCapabilities, type MigrationCapabilityOverrides } from '@handoff/qapi';
import { capabilitiesToWire, migrationInfoFromWire, parametersToWire } from '@handoff/qapi/wire';
import type { MigrationInfo, MigrationParameterOverrides } from '@handoff/qapi';
import { createClient, FramedSocket, RemoteError, streamCall } from '@handoff/service';
import { testCredentialsSync } from '@handoff/service/testing';
import { vmmCall, type VmmUnderTest } from './vmm.js';

/** Helpers of the migration tests: one migration end to end, RAM of a target, a raw stream. */

/** PrepareIncoming on `to`, then MigrateVm on `from`; resolves with the final info. */
export async function migrateVm(
  from: VmmUnderTest,
  to: VmmUnderTest,
  name: string,
  opts: {
    capabilities?: MigrationCapabilityOverrides;
    parameters?: MigrationParameterOverrides;
    jobId?: string;
    /**
     * What carries the migration: the target's data channel (default), gRPC, or the switchover
     * slot PrepareIncoming prepared, with the data channel where the target offers no slot (as
     * the migrator does).
     */
    via?: 'data' | 'grpc' | 'slot';
    /**
     * Pass the VM's spec and the capabilities to PrepareIncoming so the target builds the
     * machine ahead (default, as the migrator does); false: the stream's header builds it.
     */
    prebuild?: boolean;
    /** Runs between PrepareIncoming and MigrateVm (e.g. to alter the target's slot). */
    onPrepared?: (prep: pb.PrepareIncomingResponse) => void;
    /** Sees every MigrationInfo MigrateVm streams, the final one last. */
    onInfo?: (info: MigrationInfo) => void;
  } = {},
): Promise<MigrationInfo> {
  const jobId = opts.jobId ?? `job-${name}-${Date.now()}`;
  const capabilities = capabilitiesToWire(resolveCapabilities(opts.capabilities ?? {}));
  const spec =
    opts.prebuild === false ? undefined : (await vmmCall(from.client, 'getVm', { name })).vm?.spec;
  const prep = await vmmCall(to.client, 'prepareIncoming', {
    name,
    jobId,
    spec,
    capabilities,
    sourceVmm: from.id,
  });
  if (opts.via !== 'grpc' && prep.dataAddress === '') {
    throw new Error(`vmm at ${prep.address} offers no data channel`);
  }
  opts.onPrepared?.(prep);
  return migrateVmCall(
    from.client,
    {
      name,
      jobId,
      targetAddress: prep.address,
      token: prep.token,
      capabilities,
      parameters: parametersToWire(opts.parameters ?? {}),
      targetDataAddress: opts.via === 'grpc' ? '' : prep.dataAddress,
      targetHandoffSlot: opts.via === 'slot' ? prep.handoffSlot : '',
    },
    opts.onInfo,
  );
}

/**
 * MigrateVm on `client` (a server stream, 15 s deadline) read to its end: resolves with the
 * final MigrationInfo, the stream's last message; `onInfo` sees every message as it arrives. A
 * failed migration rejects with the call's RemoteError.
 */
export async function migrateVmCall(
  client: pb.VmmServiceClient,
  request: pb.MigrateVmRequest,
  onInfo?: (info: MigrationInfo) => void,
): Promise<MigrationInfo> {
  const last = await streamCall(client, 'migrateVm', request, {
    deadlineMs: 15_000,
    onMessage: (res) => onInfo?.(migrationInfoFromWire(res.info!)),
  });
  return migrationInfoFromWire(last.info!);
}

/**
 * Reads `length` bytes at `offset` of a VM's private RAM block straight from the vmm process's
 * memfd (`/proc/<pid>/fd`, named `handoff:<vm>:<block>`): what the guest sees, with no RPC.
 */
export function readPrivateRam(
  pid: number,
  vm: string,
  block: string,
  offset: number,
  length: number,
): Uint8Array {
  const want = `/memfd:handoff:${vm}:${block}`;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let link: string;
    try {
      link = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    if (!link.startsWith(want)) continue;
    const f = openSync(`/proc/${pid}/fd/${fd}`, 'r');
    try {
      const out = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        const n = readSync(f, out, got, length - got, offset + got);
        if (n <= 0) break;
        got += n;
      }
      return out;
    } finally {
      closeSync(f);
    }
  }
  throw new Error(`no memfd ${want} in process ${pid}`);
}

/** A raw Incoming stream to a vmm (a hostile or hand-made source). */
export interface RawIncoming {
  send(req: vmmStream.IncomingRequest): void;
  end(): void;
  /** The first reply that is an error or a resumed ack, or the stream's end. */
  outcome(): Promise<{ error?: vmmStream.StreamError; resumed?: boolean; acked: boolean }>;
  close(): void;
}

/**
 * A raw stream to `address`: the gRPC Incoming call (with `credentials`; default: the
 * certificate of vmm `vmm-x` from the run's test PKI), or with `data` the data channel at that
 * address (`unix:/path`, from PrepareIncoming's data_address).
 */
export function rawIncoming(
  address: string,
  data?: string,
  credentials: grpc.ChannelCredentials = testCredentialsSync(
    { id: 'vmm-x', role: 'vmm' },
    { serverRole: 'vmm' },
  ),
): RawIncoming {
  if (data !== undefined) return rawDataChannel(data);
  const client = createClient(vmmStream.MigrationServiceClient, address, credentials);
  const call = client.incoming();
  let acked = false;
  const outcome = new Promise<{ error?: vmmStream.StreamError; resumed?: boolean; acked: boolean }>(
    (resolve) => {
      call.on('data', (r: vmmStream.IncomingResponse) => {
        if (r.reply?.$case === 'headerAck') acked = true;
        if (r.reply?.$case === 'error') resolve({ error: r.reply.value, acked });
        if (r.reply?.$case === 'resumed') resolve({ resumed: true, acked });
      });
      call.on('error', () => resolve({ acked }));
      call.on('end', () => resolve({ acked }));
    },
  );
  return {
    send: (req) => void call.write(req),
    end: () => call.end(),
    outcome: () => outcome,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

function rawDataChannel(address: string): RawIncoming {
  const socket = connect(address.slice('unix:'.length));
  let acked = false;
  let settle: (o: { error?: vmmStream.StreamError; resumed?: boolean; acked: boolean }) => void;
  const outcome = new Promise<{ error?: vmmStream.StreamError; resumed?: boolean; acked: boolean }>(
    (resolve) => (settle = resolve),
  );
  const framed = new FramedSocket(socket, 1 << 20, {
    frame: (payload) => {
      const r = vmmStream.IncomingResponse.decode(payload);
      if (r.reply?.$case === 'headerAck') acked = true;
      if (r.reply?.$case === 'error') settle({ error: r.reply.value, acked });
      if (r.reply?.$case === 'resumed') settle({ resumed: true, acked });
    },
    closed: () => settle({ acked }),
  });
  return {
    send: (req) => void framed.send(vmmStream.IncomingRequest.encode(req).finish()),
    end: () => framed.end(),
    outcome: () => outcome,
    close: () => framed.destroy(),
  };
}

/** A stream header as a source would send it for `spec`. */
export function headerFor(
  token: string,
  spec: pb.VmSpec,
  blocks: vmmStream.StreamBlock[],
  opts: { major?: number; minor?: number; source?: string } = {},
): vmmStream.IncomingRequest {
  return {
    frame: {
      $case: 'header',
      value: {
        formatMajor: opts.major ?? 1,
        formatMinor: opts.minor ?? 0,
        token,
        jobId: 'hostile',
        capabilities: [migration.MigrationCapability.MIGRATION_CAPABILITY_BYPASS_SHARED_MEMORY],
        spec,
        blocks,
        sourceVmmId: opts.source ?? 'vmm-x',
      },
    },
  };
}

/** The `ab` layout the migration tests use: 64 pages 1 MiB into RAM, a 'B' every 4 passes. */
export const AB_BASE = 0x100000;
export const AB_PAGES = 64;
export const abArgs = {
  'ab.start': '0x80100000',
  'ab.pages': String(AB_PAGES),
  'ab.every': '4',
} as const;

/** The RemoteError a call was refused with. @throws when it succeeded or failed otherwise */
export async function refused(p: Promise<unknown>): Promise<RemoteError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof RemoteError) return e;
    throw e;
  }
  throw new Error('the call succeeded but should have been refused');
}

/**
 * After a completed migration the source retires the VM on its own: it is listed as
 * `postmigrate` (never running) until its thread and mappings are gone, then not at all.
 * Asserts that, waiting up to `timeoutMs` for it to go.
 */
export async function expectRetired(
  source: VmmUnderTest,
  name: string,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let state: pb.VmState;
    try {
      state = (await vmmCall(source.client, 'getVm', { name })).vm!.state;
    } catch (err) {
      if (err instanceof RemoteError && err.code === 'VMM_VM_NOT_FOUND') return;
      throw err;
    }
    if (state !== vmmPb.VmState.VM_STATE_POSTMIGRATE) {
      throw new Error(`VM ${name} is ${vmmPb.VmState[state]} on its migration source`);
    }
    if (Date.now() > deadline) {
      throw new Error(`VM ${name} is still listed on its migration source after ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
