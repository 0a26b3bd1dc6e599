import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { MessageChannel } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import type { VcpuInit } from './protocol.js';
import { VcpuThreadPool } from './pool.js';

const dir = mkdtempSync(join(tmpdir(), 'handoff-pool-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A stand-in worker: answers on the command port with how it got its init and, as a spare,
 * the hush word when it was taken.
 */
function echoWorker(): URL {
  const file = join(dir, 'echo.mjs');
  writeFileSync(
    file,
    `import { parentPort, workerData } from 'node:worker_threads';
     const spare = workerData.t === 'spare';
     const init = spare ? await new Promise((r) => parentPort.once('message', (m) => r(m.init))) : workerData;
     const hushed = spare ? Atomics.load(new Int32Array(workerData.hush), 0) : undefined;
     init.commands.postMessage({ name: init.name, spare, hushed });
     init.commands.close();`,
  );
  return pathToFileURL(file);
}

function initFor(name: string): { init: VcpuInit; reply: Promise<unknown> } {
  const channel = new MessageChannel();
  const reply = new Promise((resolve) => channel.port1.once('message', resolve));
  return { init: { name, commands: channel.port2 } as unknown as VcpuInit, reply };
}

const until = async (cond: () => boolean, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
};

describe('VcpuThreadPool', () => {
  it('hands out a started spare, then starts the next one', async () => {
    const pool = new VcpuThreadPool(echoWorker(), 1);
    expect(pool.available).toBe(1);
    const a = initFor('a');
    const w = pool.take(a.init);
    const exited = new Promise((r) => w.once('exit', r));
    expect(pool.available).toBe(0);
    expect(await a.reply).toEqual({ name: 'a', spare: true, hushed: 0 });
    await until(() => pool.available === 1);
    expect(pool.available).toBe(1);
    await exited;
    await pool.close();
  });

  it('starts no spare while a hold is in place, and the next one once it is released', async () => {
    const pool = new VcpuThreadPool(echoWorker(), 1);
    const release = pool.hold();
    const a = initFor('a');
    pool.take(a.init);
    // The spare saw the hold: it would have paused its warm-up.
    expect(await a.reply).toEqual({ name: 'a', spare: true, hushed: 1 });
    await new Promise((r) => setTimeout(r, 400)); // well past the refill delay
    expect(pool.available).toBe(0);
    const second = pool.hold();
    release();
    release(); // once only: the second hold still counts
    await new Promise((r) => setTimeout(r, 400));
    expect(pool.available).toBe(0);
    second();
    await until(() => pool.available === 1);
    expect(pool.available).toBe(1);
    await pool.close();
  });

  it('starts a thread of its own when no spare waits (size 0)', async () => {
    const pool = new VcpuThreadPool(echoWorker(), 0);
    const b = initFor('b');
    pool.take(b.init);
    expect(await b.reply).toEqual({ name: 'b', spare: false });
    expect(pool.available).toBe(0);
    await pool.close();
  });

  it('stops starting spares that keep dying, and still serves takes', async () => {
    const file = join(dir, 'dies.mjs');
    const starts = join(dir, 'starts');
    writeFileSync(starts, '');
    writeFileSync(
      file,
      `import { appendFileSync } from 'node:fs'; appendFileSync(${JSON.stringify(starts)}, 'x'); process.exit(3);`,
    );
    const pool = new VcpuThreadPool(pathToFileURL(file), 1);
    await until(() => readFileSync(starts, 'utf8').length >= 3);
    await new Promise((r) => setTimeout(r, 1000)); // time for (wrong) further restarts
    expect(readFileSync(starts, 'utf8')).toBe('xxx');
    expect(pool.available).toBe(0);
    const c = initFor('c');
    const w = pool.take(c.init);
    const code = await new Promise((r) => w.once('exit', r));
    expect(code).toBe(3);
    await pool.close();
  }, 15_000);
});
