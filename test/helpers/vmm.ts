import type * as grpc from '@grpc/grpc-js';
import { vmm as pb } from '@handoff/proto';
import { createClient, unaryCall, type UnaryMethod } from '@handoff/service';
import { readFileSync } from 'node:fs';
import { serviceIdentity, startService, type TestService } from './services.js';

/**
 * Helpers of the VM tests: a vmm process with a client, spec builders, console and watch
 * sessions that collect what arrives, and the process's CPU time.
 */

/** A vmm process and a client of it. */
export interface VmmUnderTest {
  /** Its instance id (`--id`, the CN of its certificate). */
  readonly id: string;
  readonly process: TestService;
  readonly client: pb.VmmServiceClient;
  /** Closes the client and stops the process gracefully; returns the exit code. */
  stop(): Promise<number | null>;
}

/** Starts the built vmm (port 0, ready file); no migrator unless `args` names one. */
export async function startVmmProcess(
  args: string[] = [],
  opts: { env?: NodeJS.ProcessEnv } = {},
): Promise<VmmUnderTest> {
  const proc = await startService('vmm', ['--migrator', '127.0.0.1:9', ...args], opts);
  const client = createClient(pb.VmmServiceClient, proc.address, proc.credentials);
  return {
    id: serviceIdentity('vmm', args).id,
    process: proc,
    client,
    stop: async () => {
      client.close();
      return proc.stop();
    },
  };
}

/** A unary VmmService call with a 15 s deadline. */
export function vmmCall<K extends UnaryMethod<pb.VmmServiceClient>>(
  client: pb.VmmServiceClient,
  method: K,
  request: Parameters<typeof unaryCall<pb.VmmServiceClient, K>>[2],
) {
  return unaryCall(client, method, request, { deadlineMs: 15_000 });
}

/** A VmSpec with one ram0 block at 0x80000000. */
export function vmSpec(
  name: string,
  guest: string,
  opts: {
    memory?: number;
    backend?: pb.RamBackend;
    region?: string;
    args?: Record<string, string>;
    blocks?: pb.RamBlockSpec[];
  } = {},
): pb.VmSpec {
  return {
    name,
    guest,
    ram: opts.blocks ?? [
      {
        id: 'ram0',
        guestBase: 0x8000_0000n,
        size: BigInt(opts.memory ?? 16 * 1024 * 1024),
        backend: opts.backend ?? pb.RamBackend.RAM_BACKEND_PRIVATE,
        region: opts.region ?? '',
      },
    ],
    args: opts.args ?? {},
  };
}

async function until(
  what: () => boolean,
  describe: () => string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!what()) {
    if (Date.now() > deadline) throw new Error(describe());
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A Console stream that collects output. */
export interface ConsoleUnderTest {
  output(): string;
  send(text: string): void;
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  /** Resolves when the server ends the stream (OK) or rejects with its error. */
  readonly ended: Promise<void>;
  close(): void;
}

export function openConsole(client: pb.VmmServiceClient, name: string): ConsoleUnderTest {
  const stream = client.console();
  let out = '';
  stream.on(
    'data',
    (res: pb.ConsoleResponse) => (out += Buffer.from(res.output).toString('latin1')),
  );
  const ended = new Promise<void>((resolve, reject) => {
    stream.on('end', () => resolve());
    stream.on('error', (err: grpc.ServiceError) => (err.code === 1 ? resolve() : reject(err)));
  });
  ended.catch(() => undefined);
  stream.write({ name, input: new Uint8Array(0) });
  return {
    output: () => out,
    send: (text) => stream.write({ name: '', input: Buffer.from(text, 'latin1') }),
    waitFor: (text, timeoutMs = 15_000) =>
      until(
        () => out.includes(text),
        () => `"${text}" never appeared on the console of ${name}; got:\n${out}`,
        timeoutMs,
      ),
    ended,
    close: () => stream.cancel(),
  };
}

/** A WatchVm stream that collects events. */
export interface WatchUnderTest {
  readonly events: pb.WatchVmResponse[];
  kinds(): pb.VmEventKind[];
  waitFor(kind: pb.VmEventKind, timeoutMs?: number): Promise<pb.WatchVmResponse>;
  readonly ended: Promise<void>;
  close(): void;
}

export function watchVm(client: pb.VmmServiceClient, name: string): WatchUnderTest {
  const stream = client.watchVm({ name });
  const events: pb.WatchVmResponse[] = [];
  stream.on('data', (e: pb.WatchVmResponse) => events.push(e));
  const ended = new Promise<void>((resolve, reject) => {
    stream.on('end', () => resolve());
    stream.on('error', (err: grpc.ServiceError) => (err.code === 1 ? resolve() : reject(err)));
  });
  ended.catch(() => undefined);
  return {
    events,
    kinds: () => events.map((e) => e.kind),
    waitFor: async (kind, timeoutMs = 15_000) => {
      await until(
        () => events.some((e) => e.kind === kind),
        () =>
          `no ${pb.VmEventKind[kind]} event for ${name}; got ${events.map((e) => pb.VmEventKind[e.kind]).join(', ')}`,
        timeoutMs,
      );
      return events.find((e) => e.kind === kind)!;
    },
    ended,
    close: () => stream.cancel(),
  };
}

/** Polls GetVm until the VM is in `state`. */
export async function waitForVmState(
  client: pb.VmmServiceClient,
  name: string,
  state: pb.VmState,
  timeoutMs = 15_000,
): Promise<pb.Vm> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { vm } = await vmmCall(client, 'getVm', { name });
    if (vm!.state === state) return vm!;
    if (Date.now() > deadline) {
      throw new Error(`VM ${name} is ${pb.VmState[vm!.state]}, not ${pb.VmState[state]}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** User + system CPU seconds a process has used (Linux /proc). */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
