import { EventEmitter } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import type { vmm as pb } from '@handoff/proto';
import { emptyMigrationInfo, type MigrationInfo, type MigrationStatus } from '@handoff/qapi';
import { migrationInfoFromWire } from '@handoff/qapi/wire';
import { describe, expect, it } from 'vitest';
import type { MigrateRequest } from '../migration/index.js';
import { streamMigration, type OutgoingMigrations } from './migrate-stream.js';

const TIMING = { sampleMs: 5, everyMs: 60 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const request: MigrateRequest = {
  name: 'vm1',
  jobId: 'job-1',
  target: { address: 'b:1', dataChannel: null, switchoverSlot: null },
  token: 't',
  capabilities: {} as MigrateRequest['capabilities'],
  parameters: {} as MigrateRequest['parameters'],
};

/** A MigrateVm call as the handler sees it: records writes; `full` makes write() say false. */
class FakeCall extends EventEmitter {
  readonly written: MigrationInfo[] = [];
  cancelled = false;
  full = false;
  deadline: number = Infinity;
  write(res: pb.MigrateVmResponse): boolean {
    this.written.push(migrationInfoFromWire(res.info!));
    return !this.full;
  }
  getDeadline(): number {
    return this.deadline;
  }
  statuses(): MigrationStatus[] {
    return this.written.map((i) => i.status);
  }
  asCall() {
    return this as unknown as grpc.ServerWritableStream<pb.MigrateVmRequest, pb.MigrateVmResponse>;
  }
}

/** A migration whose status follows `steps` ([ms after start, status]) and then ends. */
function scripted(
  steps: [number, MigrationStatus][],
  endMs: number,
  outcome: 'completed' | Error = 'completed',
): OutgoingMigrations & { cancels: number; status: () => MigrationStatus } {
  let status: MigrationStatus = 'none';
  let transferred = 0;
  const m = {
    cancels: 0,
    status: () => status,
    migrate: async () => {
      const t0 = Date.now();
      for (const [at, s] of steps) {
        await sleep(Math.max(0, at - (Date.now() - t0)));
        status = s;
        transferred += 4096;
      }
      await sleep(Math.max(0, endMs - (Date.now() - t0)));
      if (outcome instanceof Error) {
        status = 'failed';
        throw outcome;
      }
      status = 'completed';
      return { ...emptyMigrationInfo('completed'), downtimeUs: 1234 };
    },
    info: () => ({
      ...emptyMigrationInfo(status),
      ram: { ...emptyMigrationInfo(status).ram, transferred },
    }),
    cancel: () => {
      m.cancels++;
    },
  };
  return m;
}

describe('MigrateVm as a server stream', () => {
  it('sends the info on each status change and every interval, then the final info last', async () => {
    const call = new FakeCall();
    const m = scripted(
      [
        [0, 'setup'],
        [30, 'active'],
        [230, 'device'],
      ],
      260,
    );
    await streamMigration(m, request, call.asCall(), TIMING);
    const statuses = call.statuses();
    expect(statuses.at(-1)).toBe('completed');
    expect(call.written.at(-1)!.downtimeUs).toBe(1234);
    // every status it went through, in order, each change once at least
    const changes = statuses.filter((s, k) => k === 0 || statuses[k - 1] !== s);
    expect(changes).toEqual(['setup', 'active', 'device', 'completed']);
    // 200 ms active at one message per 60 ms: the change and about three repeats (timers run
    // late on a busy machine, never early)
    const active = statuses.filter((s) => s === 'active').length;
    expect(active).toBeGreaterThanOrEqual(2);
    expect(active).toBeLessThanOrEqual(5);
  });

  it('sends only the final info for a migration shorter than one sample', async () => {
    const call = new FakeCall();
    await streamMigration(scripted([[0, 'setup']], 1), request, call.asCall(), {
      sampleMs: 50,
      everyMs: 250,
    });
    expect(call.statuses()).toEqual(['completed']);
  });

  it('rejects with the migration error and writes no final info', async () => {
    const call = new FakeCall();
    const err = new Error('the target refused the header');
    const m = scripted([[0, 'active']], 40, err);
    await expect(streamMigration(m, request, call.asCall(), TIMING)).rejects.toBe(err);
    expect(call.statuses()).not.toContain('completed');
    expect(call.statuses()).not.toContain('failed');
  });

  it('reports nothing of another migration when this one is refused at once', async () => {
    const call = new FakeCall();
    const other: OutgoingMigrations = {
      migrate: () => Promise.reject(new Error('VM vm1 is already migrating')),
      info: () => emptyMigrationInfo('active'), // the one already running
      cancel: () => undefined,
    };
    await expect(streamMigration(other, request, call.asCall(), TIMING)).rejects.toThrow(
      /already migrating/,
    );
    expect(call.written).toEqual([]);
  });

  it('writes nothing more while the stream is full, then the newest info after drain', async () => {
    const call = new FakeCall();
    call.full = true;
    const m = scripted(
      [
        [0, 'setup'],
        [20, 'active'],
      ],
      200,
    );
    const run = streamMigration(m, request, call.asCall(), TIMING);
    await sleep(60);
    expect(call.statuses()).toEqual(['setup']); // written once, then the stream was full
    call.full = false;
    call.emit('drain');
    await sleep(20);
    expect(call.statuses()).toEqual(['setup', 'active']);
    await run;
    expect(call.statuses().at(-1)).toBe('completed');
  });

  it('waits for drain before the final info', async () => {
    const call = new FakeCall();
    call.full = true;
    let ended = false;
    const run = streamMigration(scripted([[0, 'setup']], 30), request, call.asCall(), TIMING).then(
      () => (ended = true),
    );
    await sleep(80);
    expect(ended).toBe(false);
    expect(call.statuses()).toEqual(['setup']);
    call.full = false;
    call.emit('drain');
    await run;
    expect(call.statuses()).toEqual(['setup', 'completed']);
  });

  it('keeps the migration running when the caller goes away, and writes no more', async () => {
    const call = new FakeCall();
    const m = scripted([[0, 'active']], 120);
    const run = streamMigration(m, request, call.asCall(), TIMING);
    await sleep(30);
    const before = call.written.length;
    call.cancelled = true;
    call.emit('cancelled');
    await run;
    expect(m.cancels).toBe(0);
    expect(m.status()).toBe('completed');
    expect(call.written.length).toBe(before);
  });

  it('cancels the migration when the call deadline passes', async () => {
    const call = new FakeCall();
    call.deadline = Date.now() + 40;
    const m = scripted([[0, 'active']], 150);
    await streamMigration(m, request, call.asCall(), TIMING);
    expect(m.cancels).toBe(1);
  });
});
