import { memstore as pb } from '@handoff/proto';
import { createClient, RemoteError, unaryCall } from '@handoff/service';
import type { ChildProcess } from 'node:child_process';
import { mapFile } from '@handoff/shm';
import { existsSync } from 'node:fs';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FAILPOINT_VARIABLE } from '../failpoints.js';
import { makeTempDirs, type TempDirs } from '../testing/fixtures.js';
import { MEMSTORE_MAIN, startMemstoreProcess } from '../testing/process.js';

/**
 * Lease changes against a real memstore process killed with SIGKILL: a
 * lease change whose reply was sent (or was about to be) is never lost and
 * never rolled back by the restart, for VOLATILE regions (committed without
 * fsync) as for PERSISTENT ones. Needs the build (apps/memstore/dist), like
 * the cross-process tests under test/.
 */

const built = existsSync(MEMSTORE_MAIN);

interface Proc {
  child: ChildProcess;
  client: pb.MemstoreServiceClient;
  output(): string;
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

let dirs: TempDirs;
let proc: Proc | undefined;
/** Every process started and not yet exited: none may outlive the tests (e.g. after a timeout). */
const live = new Set<ChildProcess>();

beforeEach(() => {
  dirs = makeTempDirs();
});

afterEach(async () => {
  await proc?.stop();
  proc = undefined;
  dirs.cleanup();
});

afterAll(() => {
  for (const child of live) child.kill('SIGKILL');
});

async function start(env: NodeJS.ProcessEnv = {}): Promise<Proc> {
  // Plaintext: the test's client takes leases for any holder, as no one vmm could over TLS.
  const p = await startMemstoreProcess(dirs, { env, insecure: true });
  live.add(p.child);
  p.child.once('exit', () => live.delete(p.child));
  const client = createClient(pb.MemstoreServiceClient, p.address, p.credentials);
  return {
    child: p.child,
    client,
    output: p.output,
    kill9: async () => {
      await p.kill9();
      client.close();
    },
    stop: async () => {
      await p.stop();
      client.close();
    },
  };
}

const KINDS = [
  ['volatile', pb.RegionKind.REGION_KIND_VOLATILE],
  ['persistent', pb.RegionKind.REGION_KIND_PERSISTENT],
] as const;

const HOLDERS = ['vmm-a/vm1', 'vmm-b/vm1'] as const;

function byName(name: string): pb.RegionSelector {
  return { selector: { $case: 'name', value: name } };
}

describe.skipIf(!built)(
  `lease changes survive kill -9 of memstore (needs ${MEMSTORE_MAIN})`,
  {
    timeout: 120_000,
  },
  () => {
    it.each(KINDS)(
      '%s: a transfer committed just before the process dies (failpoint, no reply) is kept',
      async (_label, kind) => {
        // The acquire passes the failpoint once, the transfer a second time.
        proc = await start({ [FAILPOINT_VARIABLE]: 'lease-after-commit:2' });
        const region = byName('ram');
        await unaryCall(proc.client, 'createRegion', { name: 'ram', size: 1n << 20n, kind });
        await unaryCall(proc.client, 'acquireLease', { region, holder: HOLDERS[0] });
        const err = await unaryCall(proc.client, 'transferLease', {
          region,
          fromHolder: HOLDERS[0],
          expectedEpoch: 1n,
          toHolder: HOLDERS[1],
        }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err, 'the transfer should fail: memstore died before replying').toBeInstanceOf(
          RemoteError,
        );
        await proc.kill9();
        expect(proc.child.signalCode).toBe('SIGKILL');

        proc = await start();
        const { region: after } = await unaryCall(proc.client, 'getRegion', { region });
        expect(after?.lease).toMatchObject({ holder: HOLDERS[1], epoch: 2n });
        // The old holder is fenced off: its epoch is stale.
        const stale = await unaryCall(proc.client, 'transferLease', {
          region,
          fromHolder: HOLDERS[0],
          expectedEpoch: 1n,
          toHolder: HOLDERS[0],
        }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect((stale as RemoteError | undefined)?.code).toBe('LEASE_STALE_EPOCH');
      },
    );

    it.each(KINDS)(
      '%s: kill -9 right after a transfer reply arrives never loses that transfer',
      async (_label, kind) => {
        for (let round = 0; round < 3; round++) {
          proc = await start();
          const name = `ram-${round}`;
          const region = byName(name);
          await unaryCall(proc.client, 'createRegion', { name, size: 1n << 20n, kind });
          let epoch = (await unaryCall(proc.client, 'acquireLease', { region, holder: HOLDERS[0] }))
            .lease!.epoch;
          const transfers = 1 + Math.floor(Math.random() * 40);
          const target = proc;
          for (let i = 0; i < transfers; i++) {
            const turn = Number(epoch - 1n) % 2;
            const lease = (
              await unaryCall(target.client, 'transferLease', {
                region,
                fromHolder: HOLDERS[turn]!,
                expectedEpoch: epoch,
                toHolder: HOLDERS[1 - turn]!,
              })
            ).lease!;
            epoch = lease.epoch;
            // On the last reply, kill at once: nothing else is in flight.
            if (i === transfers - 1) target.child.kill('SIGKILL');
          }
          await target.kill9();
          expect(target.child.signalCode).toBe('SIGKILL');

          proc = await start();
          const { region: after } = await unaryCall(proc.client, 'getRegion', { region });
          expect(after?.lease, `round ${round}, after ${transfers} transfers`).toMatchObject({
            holder: HOLDERS[Number(epoch - 1n) % 2],
            epoch,
          });
          await proc.stop();
          proc = undefined;
        }
      },
    );

    it('a transfer armed over gRPC and flipped in the arms file survives kill -9 before any resolve', async () => {
      proc = await start();
      const region = byName('ram');
      await unaryCall(proc.client, 'createRegion', {
        name: 'ram',
        size: 1n << 20n,
        kind: pb.RegionKind.REGION_KIND_VOLATILE,
      });
      await unaryCall(proc.client, 'acquireLease', { region, holder: HOLDERS[0] });
      const armed = await unaryCall(proc.client, 'armTransfer', {
        region,
        fromHolder: HOLDERS[0],
        expectedEpoch: 1n,
        toHolder: HOLDERS[1],
      });
      // The target's CAS, from this (another) process.
      const map = mapFile(armed.armsPath);
      try {
        const words = new Int32Array(map.buffer);
        const at = armed.slotOffset / 4;
        expect(Atomics.compareExchange(words, at, armed.armedWord, armed.flippedWord)).toBe(
          armed.armedWord,
        );
      } finally {
        map.close();
      }
      await proc.kill9();
      expect(proc.child.signalCode).toBe('SIGKILL');

      proc = await start();
      const { region: after } = await unaryCall(proc.client, 'getRegion', { region });
      expect(after?.lease).toMatchObject({ holder: HOLDERS[1], epoch: 2n });
      expect(proc.output()).toContain('lease transferred');
    });
  },
);
