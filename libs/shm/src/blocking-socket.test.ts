import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, afterEach, describe, expect, it } from 'vitest';

import {
  UNIX_PATH_MAX,
  connectUnixBlocking,
  readExactSync,
  setSocketTimeout,
  writeAllSync,
  type ShmErrorCode,
} from './index.js';
import { expectShmError, spawnChild, type SpawnedChild } from './testing/helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'handoff-shm-sock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let socketCount = 0;
const servers: SpawnedChild[] = [];
const fds: number[] = [];
afterEach(async () => {
  for (const fd of fds.splice(0)) closeSync(fd);
  for (const server of servers.splice(0)) {
    server.process.kill('SIGTERM');
    await server.result;
  }
});

/**
 * A `net` server in another process (the tests block this thread, so the server cannot share its
 * event loop). Modes: 'echo' sends back what it receives; 'silent' accepts and never writes;
 * 'close' ends each connection at once; 'short' writes 3 bytes, then ends.
 */
const SERVER = `
import net from 'node:net';
const server = net.createServer((socket) => {
  socket.on('error', () => {});
  if (args.mode === 'echo') socket.pipe(socket);
  else if (args.mode === 'close') socket.end();
  else if (args.mode === 'short') socket.end(Buffer.from([1, 2, 3]));
});
server.listen(args.path, () => console.log('listening'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`;

async function startServer(mode: 'echo' | 'silent' | 'close' | 'short'): Promise<string> {
  const path = join(dir, `s${socketCount++}.sock`);
  const server = spawnChild(SERVER, { path, mode });
  servers.push(server);
  expect(await server.firstLine).toBe('listening');
  return path;
}

function connect(path: string, timeoutMs: number): number {
  const fd = connectUnixBlocking(path, timeoutMs);
  fds.push(fd);
  return fd;
}

describe('connectUnixBlocking', { timeout: 30_000 }, () => {
  it('gives a blocking close-on-exec fd; a frame written with writeAllSync is echoed back', async () => {
    const path = await startServer('echo');
    const fd = connect(path, 5_000);
    const flags = Number.parseInt(
      /flags:\s*(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? 'x',
      8,
    );
    expect(flags & 0o2000000).not.toBe(0); // O_CLOEXEC
    expect(flags & 0o4000).toBe(0); // not O_NONBLOCK

    const frame = Buffer.alloc(64 * 1024);
    frame.writeUInt32LE(frame.length - 4, 0);
    for (let i = 4; i < frame.length; i++) frame[i] = i % 253;
    writeAllSync(fd, frame);

    const back = Buffer.alloc(frame.length + 16);
    readExactSync(fd, back, 4);
    expect(back.readUInt32LE(0)).toBe(frame.length - 4);
    readExactSync(fd, back.subarray(4), frame.length - 4);
    expect(back.subarray(0, frame.length).equals(frame)).toBe(true);
    readExactSync(fd, back, 0); // nothing to read: returns at once
  });

  it('readExactSync throws SHM_TIMED_OUT when the server never answers', async () => {
    const path = await startServer('silent');
    const fd = connect(path, 5_000);
    setSocketTimeout(fd, 200);
    writeAllSync(fd, Buffer.from('ping'));
    const start = performance.now();
    const err = expectShmError(() => readExactSync(fd, new Uint8Array(8), 8), 'SHM_TIMED_OUT');
    expect(performance.now() - start).toBeLessThan(400);
    expect(err.errno).toBe('EAGAIN');
    expect(err.syscall).toBe('read');
  });

  it('readExactSync throws SHM_PEER_CLOSED when the server closes', async () => {
    const closed = connect(await startServer('close'), 5_000);
    expectShmError(() => readExactSync(closed, new Uint8Array(8), 8), 'SHM_PEER_CLOSED');

    const short = connect(await startServer('short'), 5_000);
    const into = new Uint8Array(8);
    const err = expectShmError(() => readExactSync(short, into, 8), 'SHM_PEER_CLOSED');
    expect(err.message).toMatch(/after 3 of 8 bytes/);
    expect([...into.subarray(0, 3)]).toEqual([1, 2, 3]);
  });

  it('a missing socket path is SHM_NOT_FOUND with errno ENOENT', () => {
    const err = expectShmError(
      () => connectUnixBlocking(join(dir, 'missing.sock'), 1_000),
      'SHM_NOT_FOUND',
    );
    expect(err.errno).toBe('ENOENT');
    expect(err.syscall).toBe('connect');
  });

  it('setSocketTimeout on a file that is not a socket is SHM_INVALID_ARGUMENT (ENOTSOCK)', () => {
    const fd = openSync(join(dir, 'plain'), 'w');
    fds.push(fd);
    const err = expectShmError(() => setSocketTimeout(fd, 10), 'SHM_INVALID_ARGUMENT');
    expect(err.errno).toBe('ENOTSOCK');
  });

  const cases: [string, () => unknown, ShmErrorCode][] = [
    [
      'a path longer than sun_path',
      () => connectUnixBlocking(`/tmp/${'x'.repeat(UNIX_PATH_MAX)}`, 1_000),
      'SHM_INVALID_ARGUMENT',
    ],
    ['an empty path', () => connectUnixBlocking('', 1_000), 'SHM_INVALID_ARGUMENT'],
    ['a path with NUL', () => connectUnixBlocking('/tmp/a\0b', 1_000), 'SHM_INVALID_ARGUMENT'],
    ['a zero timeout', () => connectUnixBlocking('/tmp/x.sock', 0), 'SHM_INVALID_ARGUMENT'],
    ['a NaN timeout', () => setSocketTimeout(0, NaN), 'SHM_INVALID_ARGUMENT'],
    ['a negative fd', () => setSocketTimeout(-1, 10), 'SHM_INVALID_ARGUMENT'],
    [
      'a length beyond the array',
      () => readExactSync(0, new Uint8Array(2), 3),
      'SHM_INVALID_ARGUMENT',
    ],
    [
      'a non-array to write',
      () => writeAllSync(0, 'text' as unknown as Uint8Array),
      'SHM_INVALID_ARGUMENT',
    ],
  ];
  it.each(cases)('rejects %s', (_name, fn, code) => {
    expectShmError(fn, code);
  });
});
