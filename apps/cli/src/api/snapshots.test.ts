import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { memstore as pb, serviceNames } from '@handoff/proto';
import {
  ServiceError,
  createLogger,
  serverStream,
  startServer,
  type RunningServer,
} from '@handoff/service';
import { openAccess } from '@handoff/service/testing';
import { Clients } from './clients.js';
import { IMPORT_CHUNK, snapshots } from './snapshots.js';

const logger = createLogger({ name: 'fake-memstore', level: 'silent', format: 'json' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How the fake memstore's ExportSnapshot answers. */
interface ExportScript {
  file: Buffer;
  /** Bytes announced in the first message (default: the file's length). */
  announce?: number;
  /** Stop after this many bytes: `ok` ends the call OK, `error` with an error status. */
  cutAt?: { bytes: number; end: 'ok' | 'error' };
}

/** What the fake memstore's ImportSnapshot saw. */
interface Upload {
  start: pb.ImportSnapshotStart | undefined;
  sizes: number[];
  bytes: Buffer[];
}

/**
 * A memstore that serves only the snapshot transfer calls: ExportSnapshot from a script,
 * ImportSnapshot into memory (reading as slowly as told, refusing after `refuseAfter` bytes).
 */
function fakeMemstore() {
  const state = {
    export: { file: Buffer.alloc(0) } as ExportScript,
    uploads: [] as Upload[],
    /** While set, ImportSnapshot does not read. */
    hold: undefined as Promise<void> | undefined,
    refuseAfter: Infinity,
  };
  const exportSnapshot = serverStream(
    logger,
    async (
      _req: pb.ExportSnapshotRequest,
      call: grpc.ServerWritableStream<pb.ExportSnapshotRequest, pb.ExportSnapshotResponse>,
    ) => {
      const { file, announce, cutAt } = state.export;
      const end = cutAt?.bytes ?? file.length;
      for (let off = 0, first = true; off < end || first; first = false) {
        const data = file.subarray(off, Math.min(end, off + (1 << 20)));
        off += data.length;
        call.write({ data, totalBytes: first ? BigInt(announce ?? file.length) : 0n });
        await sleep(1);
      }
      if (cutAt?.end === 'error')
        throw new ServiceError('SNAPSHOT_CORRUPT', 'block ram0 read failed');
    },
  );
  const importSnapshot = (
    call: grpc.ServerReadableStream<pb.ImportSnapshotRequest, pb.ImportSnapshotResponse>,
    callback: grpc.sendUnaryData<pb.ImportSnapshotResponse>,
  ) => {
    const up: Upload = { start: undefined, sizes: [], bytes: [] };
    state.uploads.push(up);
    let total = 0;
    let done = false;
    call.on('data', (m: pb.ImportSnapshotRequest) => {
      if (done) return;
      if (m.part?.$case === 'start') up.start = m.part.value;
      if (m.part?.$case === 'data') {
        up.sizes.push(m.part.value.length);
        up.bytes.push(Buffer.from(m.part.value));
        total += m.part.value.length;
        if (total > state.refuseAfter) {
          done = true;
          call.pause(); // nothing more is read: only the refusal stops vmctl
          const e = new ServiceError('SNAPSHOT_FORMAT', 'block 0 of the file fails its CRC');
          callback({ code: 3, details: e.message, metadata: undefined } as never);
        }
      }
      if (state.hold !== undefined) {
        call.pause();
        void state.hold.then(() => call.resume());
      }
    });
    call.on('end', () => {
      if (done) return;
      done = true;
      callback(null, {
        snapshot: pb.Snapshot.fromPartial({
          name: up.start?.name || 'from-file',
          template: up.start?.template ?? false,
          kind: pb.SnapshotKind.SNAPSHOT_KIND_IMPORTED,
          storedBytes: BigInt(total),
        }),
      });
    });
  };
  return { state, implementation: { exportSnapshot, importSnapshot } };
}

describe("vmctl's snapshot transfers against a fake memstore", () => {
  let server: RunningServer;
  let fake: ReturnType<typeof fakeMemstore>;
  let dir: string;
  let clients: Clients;

  beforeAll(async () => {
    fake = fakeMemstore();
    server = await startServer({
      name: 'memstore',
      host: '127.0.0.1',
      port: 0,
      logger,
      tls: null,
      shutdownTimeoutMs: 100,
      services: [
        {
          name: serviceNames.memstore,
          definition: pb.MemstoreServiceService,
          implementation: fake.implementation as never,
          access: openAccess(pb.MemstoreServiceService, ['operator']),
        },
      ],
    });
    dir = mkdtempSync(join(tmpdir(), 'handoff-vmctl-snap-'));
  });

  beforeEach(() => {
    clients?.close();
    clients = new Clients({ memstore: server.address, migrator: '', timeoutMs: 5000, tls: null });
    fake.state.uploads.length = 0;
    fake.state.hold = undefined;
    fake.state.refuseAfter = Infinity;
  });

  afterAll(async () => {
    clients?.close();
    await server?.shutdown('test over');
    rmSync(dir, { recursive: true, force: true });
  });

  it('exports into FILE.partial and renames it once every announced byte is there', async () => {
    const file = randomBytes(3 * (1 << 20) + 12345);
    fake.state.export = { file };
    const out = join(dir, 'ok.snap');
    const seen: [number, number][] = [];
    const n = await snapshots.export(clients, 'kv', out, (d, t) => seen.push([d, t]));
    expect(n).toBe(file.length);
    expect(readFileSync(out).equals(file)).toBe(true);
    expect(existsSync(`${out}.partial`)).toBe(false);
    expect(seen.at(-1)).toEqual([file.length, file.length]);
    expect(seen.every(([, t]) => t === file.length)).toBe(true);
  });

  it('leaves no file when the export ends short, fails, or sends more than it announced', async () => {
    const file = randomBytes(2 << 20);
    const cases: [ExportScript, RegExp][] = [
      [{ file, cutAt: { bytes: 1 << 20, end: 'ok' } }, /ended after 1048576 of 2097152 bytes/],
      [{ file, cutAt: { bytes: 1 << 20, end: 'error' } }, /block ram0 read failed/],
      [{ file, announce: 1000 }, /more than the 1000 bytes it announced/],
    ];
    for (const [i, [script, message]] of cases.entries()) {
      fake.state.export = script;
      const out = join(dir, `bad-${i}.snap`);
      await expect(snapshots.export(clients, 'kv', out)).rejects.toThrow(message);
      expect(existsSync(out)).toBe(false);
      expect(existsSync(`${out}.partial`)).toBe(false);
    }
  });

  it('imports the file in messages of at most 1 MiB, after the start message', async () => {
    const file = randomBytes(5 * (1 << 20) + 7);
    const path = join(dir, 'in.snap');
    writeFileSync(path, file);
    const s = await snapshots.import(clients, path, { name: 'copy', template: true });
    expect(s).toMatchObject({ name: 'copy', template: true, kind: 'imported' });
    const up = fake.state.uploads[0]!;
    expect(up.start).toEqual({ name: 'copy', template: true });
    expect(Math.max(...up.sizes)).toBeLessThanOrEqual(IMPORT_CHUNK);
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    expect(sha(Buffer.concat(up.bytes))).toBe(sha(file));
  });

  it('waits for the stream while memstore does not read (backpressure)', async () => {
    const file = randomBytes(48 << 20);
    const path = join(dir, 'big.snap');
    writeFileSync(path, file);
    let release!: () => void;
    fake.state.hold = new Promise<void>((r) => (release = r));
    let sent = 0;
    const done = snapshots.import(clients, path, { name: '', template: false }, (d) => (sent = d));
    // wait until vmctl stops sending: a stream that takes nothing holds it back, well before the
    // end of the file (what it sent fills the stream's buffers at both ends, bounded whatever
    // the file's size); without backpressure it would read the whole file
    let stalled = -1;
    for (let i = 0; i < 50 && sent !== stalled; i++) {
      stalled = sent;
      await sleep(200);
    }
    expect(sent).toBe(stalled);
    expect(sent).toBeLessThan(file.length);
    release();
    fake.state.hold = undefined;
    const s = await done;
    expect(s.storedBytes).toBe(BigInt(file.length));
    expect(sent).toBe(file.length);
  });

  it("stops sending once memstore refuses the file, and reports memstore's reason", async () => {
    const file = randomBytes(64 << 20);
    const path = join(dir, 'bad.snap');
    writeFileSync(path, file);
    fake.state.refuseAfter = 2 << 20;
    let sent = 0;
    await expect(
      snapshots.import(clients, path, { name: 'x', template: false }, (d) => (sent = d)),
    ).rejects.toThrow(/importSnapshot: block 0 of the file fails its CRC/);
    // what the stream had buffered went; the rest of the file was never read
    expect(sent).toBeLessThan(file.length);
  });
});
