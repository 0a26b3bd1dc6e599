import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CONTROL_BYTES, Ctl, Request, ThreadCtl, type VcpuInit } from './protocol.js';
import { VcpuThreadPool, type VcpuHandle } from './pool.js';

const dir = mkdtempSync(join(tmpdir(), 'handoff-pool-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A stand-in pool thread: it answers each VM placed on it with `booted`, whose entry is the
 * thread's index and whose message says what the pool's hush word was; a VM named `busy-*`
 * counts as busy (RUNNABLE) until it is stopped; a stop (Ctl.REQUEST) ends a VM with `stopped`;
 * a VM named `die` ends the thread. It polls its wake word every 2 ms.
 */
function standInThread(): URL {
  const file = join(dir, 'thread.mjs');
  writeFileSync(
    file,
    `import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
     const ctl = new Int32Array(workerData.control);
     const hush = new Int32Array(workerData.hush);
     Atomics.store(ctl, ${ThreadCtl.STARTED}, 1);
     const vms = new Map();
     const count = () => {
       Atomics.store(ctl, ${ThreadCtl.VMS}, vms.size);
       Atomics.store(ctl, ${ThreadCtl.RUNNABLE}, [...vms.values()].filter((v) => v.busy).length);
     };
     let seen = 0;
     for (;;) {
       Atomics.wait(ctl, ${ThreadCtl.WAKE}, seen, 2);
       const wake = Atomics.load(ctl, ${ThreadCtl.WAKE});
       if (wake === seen) continue;
       seen = wake;
       for (let msg = receiveMessageOnPort(parentPort); msg; msg = receiveMessageOnPort(parentPort)) {
         const c = msg.message;
         if (c.t === 'exit') process.exit(0);
         if (c.t !== 'add') continue;
         if (c.init.name === 'die') process.exit(7);
         vms.set(c.id, { ctl: new Int32Array(c.init.control), busy: c.init.name.startsWith('busy-') });
         parentPort.postMessage({ id: c.id, m: { t: 'booted', entry: workerData.index, message: String(Atomics.load(hush, 0)) } });
       }
       for (const [id, v] of [...vms]) {
         if (Atomics.load(v.ctl, ${Ctl.REQUEST}) !== ${Request.STOP}) continue;
         vms.delete(id);
         parentPort.postMessage({ id, m: { t: 'stopped' } });
       }
       count();
     }`,
  );
  return pathToFileURL(file);
}

interface Placed {
  readonly handle: VcpuHandle;
  readonly ctl: Int32Array;
  /** The index of the thread that booted it, and the hush word it saw then. */
  readonly booted: Promise<{ thread: number; hush: number }>;
  readonly exited: Promise<number>;
}

function place(pool: VcpuThreadPool, name: string): Placed {
  const control = new SharedArrayBuffer(CONTROL_BYTES);
  const handle = pool.take({ name, control } as unknown as VcpuInit);
  const booted = new Promise<{ thread: number; hush: number }>((resolve) =>
    handle.on('message', (m: { t: string; entry: number; message: string }) => {
      if (m.t === 'booted') resolve({ thread: m.entry, hush: Number(m.message) });
    }),
  );
  const exited = new Promise<number>((resolve) => handle.once('exit', resolve));
  handle.on('error', () => undefined);
  return { handle, ctl: new Int32Array(control), booted, exited };
}

function stop(vm: Placed): Promise<number> {
  Atomics.store(vm.ctl, Ctl.REQUEST, Request.STOP);
  Atomics.add(vm.ctl, Ctl.DOORBELL, 1);
  vm.handle.wake();
  return vm.exited;
}

const until = async (cond: () => boolean, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
};

describe('VcpuThreadPool', () => {
  it('places VMs on its standing threads, the fewest VMs first, and reports them', async () => {
    const pool = new VcpuThreadPool(standInThread(), { threads: 2, maxThreads: 4 });
    try {
      await until(() => pool.report().threads === 2);
      const vms = ['a', 'b', 'c', 'd'].map((n) => place(pool, n));
      const threads = (await Promise.all(vms.map((v) => v.booted))).map((b) => b.thread);
      expect(threads.sort()).toEqual([0, 0, 1, 1]);
      expect(pool.report()).toEqual({ threads: 2, vms: [2, 2], busy: [0, 0] });
      expect(await stop(vms[0]!)).toBe(0);
      expect(pool.report().vms.reduce((x, y) => x + y)).toBe(3);
    } finally {
      await pool.close();
    }
  });

  it('grows only while every thread has a busy VM, and shrinks back once they idle', async () => {
    const pool = new VcpuThreadPool(standInThread(), {
      threads: 1,
      maxThreads: 2,
      retireAfterMs: 200,
    });
    try {
      const idle = place(pool, 'idle-1');
      expect((await idle.booted).thread).toBe(0);
      await new Promise((r) => setTimeout(r, 800)); // several looks: an idle VM grows nothing
      expect(pool.size).toBe(1);
      const busy = place(pool, 'busy-1');
      expect((await busy.booted).thread).toBe(0);
      await until(() => pool.size === 2);
      expect(pool.size).toBe(2);
      const next = place(pool, 'idle-2'); // placed on the thread started for growth
      expect((await next.booted).thread).toBe(1);
      await new Promise((r) => setTimeout(r, 800));
      expect(pool.size).toBe(2); // at its bound
      await stop(next);
      await new Promise((r) => setTimeout(r, 800));
      expect(pool.size).toBe(2); // thread 0 still has a busy VM: the empty one is its spare
      await stop(busy);
      await until(() => pool.size === 1);
      expect(pool.report()).toEqual({ threads: 1, vms: [1], busy: [0] });
    } finally {
      await pool.close();
    }
  });

  it('starts no thread while a hold is in place, and its threads see the hush word', async () => {
    const pool = new VcpuThreadPool(standInThread(), { threads: 1, maxThreads: 2 });
    try {
      const release = pool.hold();
      const busy = place(pool, 'busy-1');
      expect(await busy.booted).toEqual({ thread: 0, hush: 1 });
      await new Promise((r) => setTimeout(r, 800));
      expect(pool.size).toBe(1);
      const second = pool.hold();
      release();
      release(); // once only: the second hold still counts
      await new Promise((r) => setTimeout(r, 800));
      expect(pool.size).toBe(1);
      second();
      await until(() => pool.size === 2);
      expect(pool.size).toBe(2);
    } finally {
      await pool.close();
    }
  });

  it('ends the handles of a thread that dies, and starts a standing thread in its place', async () => {
    const pool = new VcpuThreadPool(standInThread(), { threads: 1, maxThreads: 1 });
    try {
      const mate = place(pool, 'mate');
      await mate.booted;
      const die = place(pool, 'die');
      expect(await die.exited).toBe(7);
      expect(await mate.exited).toBe(7); // its thread-mate went with it
      await until(() => pool.size === 1);
      const after = place(pool, 'after');
      expect((await after.booted).thread).toBe(1);
    } finally {
      await pool.close();
    }
  });

  it('stops starting threads that keep dying as they start, and still places VMs', async () => {
    const file = join(dir, 'dies.mjs');
    const starts = join(dir, 'starts');
    writeFileSync(starts, '');
    writeFileSync(
      file,
      `import { appendFileSync } from 'node:fs'; appendFileSync(${JSON.stringify(starts)}, 'x'); process.exit(3);`,
    );
    const pool = new VcpuThreadPool(pathToFileURL(file), { threads: 1 });
    try {
      await until(() => readFileSync(starts, 'utf8').length >= 3);
      await new Promise((r) => setTimeout(r, 1000)); // time for (wrong) further restarts
      expect(readFileSync(starts, 'utf8')).toBe('xxx');
      expect(pool.size).toBe(0);
      const vm = place(pool, 'c');
      expect(await vm.exited).toBe(3);
      expect(readFileSync(starts, 'utf8')).toBe('xxxx');
    } finally {
      await pool.close();
    }
  }, 15_000);
});
