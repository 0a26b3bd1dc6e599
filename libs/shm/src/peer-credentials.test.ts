import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { peerCredentials } from './index.js';
import { expectShmError } from './testing/helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'handoff-shm-peer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The fd Node keeps for a connected socket (Linux: a libuv pipe handle's fd). */
function fdOf(socket: Socket): number {
  return (socket as unknown as { _handle: { fd: number } })._handle.fd;
}

/** A unix-socket server whose accepted connections are handed to `accepted`, in turn. */
async function listen(
  name: string,
): Promise<{ path: string; server: Server; next(): Promise<Socket> }> {
  const path = join(dir, name);
  const waiting: ((s: Socket) => void)[] = [];
  const queued: Socket[] = [];
  const server = createServer((s) => {
    const w = waiting.shift();
    if (w) w(s);
    else queued.push(s);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    server,
    next: () =>
      new Promise<Socket>((resolve) => {
        const q = queued.shift();
        if (q) resolve(q);
        else waiting.push(resolve);
      }),
  };
}

describe('peerCredentials', () => {
  it("reads this process's pid, uid and gid from a connection it made to itself", async () => {
    const { path, server, next } = await listen('self.sock');
    const client = createConnection(path);
    const accepted = await next();
    try {
      expect(peerCredentials(fdOf(accepted))).toEqual({
        pid: process.pid,
        uid: process.getuid!(),
        gid: process.getgid!(),
      });
    } finally {
      client.destroy();
      accepted.destroy();
      server.close();
    }
  });

  it('names the other process when a child connects (and the child sees this process)', async () => {
    const { path, server, next } = await listen('child.sock');
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const s = require('node:net').createConnection(process.argv[1]);
         s.on('data', () => process.exit(0));`,
        path,
      ],
      { stdio: 'ignore' },
    );
    const accepted = await next();
    try {
      const creds = peerCredentials(fdOf(accepted));
      expect(creds.pid).toBe(child.pid);
      expect(creds.pid).not.toBe(process.pid);
      expect(creds.uid).toBe(process.getuid!());
    } finally {
      accepted.end('bye');
      await new Promise((resolve) => child.on('exit', resolve));
      server.close();
    }
  });

  it('refuses what is not a connected unix socket', () => {
    const file = join(dir, 'plain');
    const fd = openSync(file, 'w');
    try {
      expect(expectShmError(() => peerCredentials(fd), 'SHM_INVALID_ARGUMENT').message).toMatch(
        /ENOTSOCK/,
      );
    } finally {
      closeSync(fd);
    }
    expect(expectShmError(() => peerCredentials(-1), 'SHM_INVALID_ARGUMENT').message).toMatch(
      /fd -1/,
    );
    expectShmError(() => peerCredentials(1.5), 'SHM_INVALID_ARGUMENT');
  });
});
