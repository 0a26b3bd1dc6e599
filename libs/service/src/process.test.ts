import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ServiceStartError, startServiceProcess } from './process.js';

/**
 * A stand-in service executable: it reads `--ready-file F` like serviceMain, prints a line, and
 * then does what its first argument says (ready, exit, hang).
 */
const FAKE_SERVICE = `
import { writeFileSync, renameSync } from 'node:fs';
const argv = process.argv.slice(2);
const ready = argv[argv.indexOf('--ready-file') + 1];
const mode = argv[argv.indexOf('--mode') + 1];
console.log('fake starting in mode ' + mode + ' malloc=' + process.env.MALLOC_TOP_PAD_);
if (mode === 'exit') process.exit(3);
if (mode === 'hang') writeFileSync(ready + '.pid', String(process.pid));
if (mode === 'ready') {
  writeFileSync(ready + '.tmp', JSON.stringify({ service: 'fake', address: '127.0.0.1:1234', pid: process.pid, version: '0' }));
  renameSync(ready + '.tmp', ready);
  process.on('SIGTERM', () => { console.error('stopping'); process.exit(0); });
}
if (mode === 'stubborn') {
  writeFileSync(ready, JSON.stringify({ service: 'fake', address: '127.0.0.1:1', pid: process.pid, version: '0' }));
  process.on('SIGTERM', () => console.log('ignoring SIGTERM'));
}
setInterval(() => undefined, 1000);
`;

let dir: string;
let entry: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'service-process-'));
  entry = join(dir, 'fake.mjs');
  writeFileSync(entry, FAKE_SERVICE);
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('startServiceProcess', () => {
  it('resolves with the ready file, collects output and lines, and stops with SIGTERM', async () => {
    const lines: string[] = [];
    const svc = await startServiceProcess({
      name: 'fake',
      entry,
      args: ['--mode', 'ready'],
      onLine: (line, stream) => lines.push(`${stream}:${line}`),
    });
    expect(svc.address).toBe('127.0.0.1:1234');
    expect(svc.pid).toBe(svc.child.pid);
    expect(await svc.stop()).toBe(0);
    expect(svc.output()).toContain('fake starting in mode ready malloc=67108864');
    expect(lines).toEqual([
      'stdout:fake starting in mode ready malloc=67108864',
      'stderr:stopping',
    ]);
  });

  it('rejects with the output when the process exits during start-up', async () => {
    const err = await startServiceProcess({ name: 'fake', entry, args: ['--mode', 'exit'] }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ServiceStartError);
    expect((err as Error).message).toMatch(/^fake exited during start-up:\nfake starting/);
  });

  it('kills a process that is not ready in time', async () => {
    const readyFile = join(dir, 'never.json');
    const err = await startServiceProcess({
      name: 'fake',
      entry,
      args: ['--mode', 'hang'],
      readyFile,
      readyTimeoutMs: 1000,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceStartError);
    expect((err as Error).message).toMatch(/^fake was not ready after 1000 ms/);
    const pid = Number(readFileSync(`${readyFile}.pid`, 'utf8'));
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/); // killed and reaped before the rejection
  });

  it('kills the process when its start is aborted', async () => {
    const readyFile = join(dir, 'ready.json');
    const abort = new AbortController();
    const started = startServiceProcess({
      name: 'fake',
      entry,
      args: ['--mode', 'hang'],
      readyFile,
      signal: abort.signal,
    }).catch((e: unknown) => e);
    await expect.poll(() => existsSync(`${readyFile}.pid`)).toBe(true);
    abort.abort();
    const err = await started;
    expect(err).toBeInstanceOf(ServiceStartError);
    expect((err as Error).message).toBe('the start of fake was aborted');
    const pid = Number(readFileSync(`${readyFile}.pid`, 'utf8'));
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  });

  it('SIGKILLs a process that ignores SIGTERM after the grace period', async () => {
    const svc = await startServiceProcess({ name: 'fake', entry, args: ['--mode', 'stubborn'] });
    await expect.poll(() => svc.output()).toContain('fake starting');
    const t0 = Date.now();
    expect(await svc.stop(200)).toBeNull(); // ended by a signal, not an exit code
    expect(svc.child.signalCode).toBe('SIGKILL');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
  });

  it('refuses a missing executable before spawning anything', async () => {
    await expect(startServiceProcess({ name: 'x', entry: join(dir, 'nope.js') })).rejects.toThrow(
      /nope\.js is missing: build first/,
    );
  });
});
