/**
 * Test helpers for `@handoff/shm` (not part of the build): scratch files in /dev/shm, a real
 * garbage collector, child processes that use the addon directly, and `/proc/self/maps` checks.
 *
 * @internal
 * @packageDocumentation
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeSync, openSync, closeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { expect } from 'vitest';

import { isShmError, type ShmError, type ShmErrorCode } from '../errors.js';

/** Absolute path of the built addon. */
export const ADDON = fileURLToPath(
  new URL('../../build/Release/handoff_shm.node', import.meta.url),
);

let counter = 0;
const created = new Set<string>();

/** A fresh path in /dev/shm (not created); removed by {@link removeScratchFiles}. */
export function scratchPath(tag: string): string {
  const path = `/dev/shm/handoff-shm-test-${process.pid}-${tag}-${counter++}`;
  created.add(path);
  return path;
}

/** Create a scratch file of `size` bytes whose byte i is `fill(i)` (default: i % 251 + 1). */
export function scratchFile(
  tag: string,
  size: number,
  fill: (i: number) => number = (i) => (i % 251) + 1,
): string {
  const path = scratchPath(tag);
  const fd = openSync(path, 'w', 0o600);
  try {
    const chunk = new Uint8Array(Math.min(size, 1 << 20));
    for (let pos = 0; pos < size; pos += chunk.length) {
      const n = Math.min(chunk.length, size - pos);
      for (let i = 0; i < n; i++) chunk[i] = fill(pos + i) & 0xff;
      writeSync(fd, chunk, 0, n, pos);
    }
  } finally {
    closeSync(fd);
  }
  return path;
}

/** Remove every scratch file made by this process. */
export function removeScratchFiles(): void {
  for (const path of created) rmSync(path, { force: true });
  created.clear();
}

/** The first `length` bytes of a file at `offset`, read with plain file I/O (not a mapping). */
export function readFileBytes(path: string, offset: number, length: number): Uint8Array {
  return new Uint8Array(readFileSync(path).subarray(offset, offset + length));
}

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/**
 * Run full GCs until `done()` holds (finalizers and V8's backing-store sweeper run after GC, on
 * other ticks or threads), or fail after `timeoutMs`.
 */
export async function collectUntil(done: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error('condition not reached after repeated GCs');
    gc();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** True if `/proc/self/maps` lists `path` (the file is mapped somewhere in this process). */
export function mapsContain(path: string): boolean {
  return readFileSync('/proc/self/maps', 'utf8').includes(path);
}

/** Result of {@link runChild}. */
export interface ChildResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A child started by {@link spawnChild}. */
export interface SpawnedChild {
  /** The child process (for its pid, stdin, and to kill it). */
  readonly process: ChildProcess;
  /** Resolves with the first line the child prints on stdout. */
  readonly firstLine: Promise<string>;
  /** Resolves when the child exits. */
  readonly result: Promise<ChildResult>;
}

/**
 * Start `body` as an ES module in a new `node` process. `native` (the addon) and `args` (the
 * JSON-serialisable `args`) are in scope. The child is killed after `timeoutMs` (default 30 s).
 */
export function spawnChild(
  body: string,
  args: unknown,
  options: { stdio?: StdioOptions; timeoutMs?: number } = {},
): SpawnedChild {
  const prelude =
    `import { createRequire } from 'node:module';\n` +
    `const native = createRequire(${JSON.stringify(ADDON)})(${JSON.stringify(ADDON)});\n` +
    `const args = JSON.parse(process.argv[1]);\n`;
  const child = spawn(
    process.execPath,
    ['--input-type=module', '-e', prelude + body, JSON.stringify(args)],
    { stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  let lineSeen: (line: string) => void = () => undefined;
  const firstLine = new Promise<string>((resolve) => (lineSeen = resolve));
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
    const newline = stdout.indexOf('\n');
    if (newline >= 0) lineSeen(stdout.slice(0, newline));
  });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
  const result = new Promise<ChildResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      lineSeen(stdout);
      resolve({ code, stdout, stderr });
    });
  });
  return { process: child, firstLine, result };
}

/**
 * Run `body` as an ES module in a new `node` process. `native` (the addon) and `args` (the
 * JSON-serialisable `args`) are in scope. Resolves when the child exits.
 */
export function runChild(
  body: string,
  args: unknown,
  options: { stdio?: StdioOptions; timeoutMs?: number } = {},
): Promise<ChildResult> {
  return spawnChild(body, args, options).result;
}

/**
 * True if thread `tid` of process `pid` (default: its main thread) is asleep in a futex wait,
 * per `/proc/<pid>/task/<tid>/wchan` (e.g. `futex_do_wait`, `futex_wait_queue`).
 */
export function sleepsOnFutex(pid: number, tid: number = pid): boolean {
  try {
    return readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8').includes('futex');
  } catch {
    return false;
  }
}

/** Poll `ready()` every millisecond until it holds, or reject after `timeoutMs`. */
export async function waitFor(ready: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the other side');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** True if the scratch path exists. */
export function exists(path: string): boolean {
  return existsSync(path);
}

/** Run `fn`, expect it to throw a ShmError with `code`, and return the error. */
export function expectShmError(fn: () => unknown, code: ShmErrorCode): ShmError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(isShmError(thrown), `expected a ShmError, got ${String(thrown)}`).toBe(true);
  const error = thrown as ShmError;
  expect(error.code, error.message).toBe(code);
  return error;
}

/** Expect two byte arrays to be equal; fast on large arrays, reports the first difference. */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const b = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(b)) return;
  let i = 0;
  while (i < Math.min(a.length, b.length) && a[i] === b[i]) i++;
  expect.fail(
    `byte arrays differ (lengths ${a.length} and ${b.length}) first at offset ${i}: ${a[i]} != ${b[i]}`,
  );
}
