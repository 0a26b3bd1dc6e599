import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createLogger } from '@handoff/service';
import { afterAll, describe, expect, it } from 'vitest';
import type { GuestImage } from '../guests/catalog.js';
import type { MachineState } from '../machine/state.js';
import type { RamBacking } from '../ram/index.js';
import { Ctl, Request, ThreadCtl } from '../vcpu/protocol.js';
import { MAIN_BLOCK_ID, RAM_WINDOW } from './spec.js';
import { VcpuThreadPool } from '../vcpu/pool.js';
import type { RamBlockSpec, VmSpec } from '../model/types.js';
import { Vm } from './vm.js';

const dir = mkdtempSync(join(tmpdir(), 'handoff-vm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FAKE_STATE = { version: 1, fake: true, control: { readyCount: 1 } };
const PAUSED_AT = 2000.5;
const RUN_AT = 4000.25;

/**
 * A stand-in vCPU pool thread speaking the control protocol for each VM placed on it: a VM runs
 * on RUN and pauses on PAUSE (as `power-off`, it powers off instead), stamping each change with
 * a fixed time, and answers every new save id (Ctl.SAVE_REQ, read before REQUEST like the real
 * thread) with FAKE_STATE, or an error while running. Incoming, it reports the start before the
 * boot, like the real thread. It polls its wake word every 2 ms (it never says it sleeps, so the
 * host never needs to wake it).
 */
function standInWorker(): URL {
  const file = join(dir, 'stand-in.mjs');
  writeFileSync(
    file,
    `import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
     const thread = new Int32Array(workerData.control);
     Atomics.store(thread, ${ThreadCtl.STARTED}, 1);
     const vms = new Map();
     let wakeSeen = 0;
     const step = (vm) => {
       const { id, init, ctl } = vm;
       const post = (m) => parentPort.postMessage({ id, m });
       const bell = Atomics.load(ctl, ${Ctl.DOORBELL});
       if (bell === vm.seen) return;
       vm.seen = bell;
       const saveId = Atomics.load(ctl, ${Ctl.SAVE_REQ});
       const req = Atomics.load(ctl, ${Ctl.REQUEST});
       if (req === ${Request.STOP}) {
         post({ t: 'stopped' });
         vms.delete(id);
         return;
       }
       if (vm.incoming) {
         if (vm.commands.length === 0) return;
         vm.incoming = false;
         if (req === ${Request.RUN}) {
           vm.run = 'running';
           post({ t: 'state', state: 'running', instret: 0, at: ${RUN_AT} });
         }
         post({ t: 'booted', entry: 0 });
         return;
       }
       if (req === ${Request.RUN} && vm.run !== 'running') {
         vm.run = 'running';
         post({ t: 'state', state: 'running', instret: 0, at: 1000 });
       } else if (req === ${Request.PAUSE} && vm.run === 'running') {
         vm.run = init.name === 'power-off' ? 'powered-off' : 'paused';
         post({ t: 'state', state: vm.run, instret: 0, at: ${PAUSED_AT}, exitCode: 0, latencyMs: 0.1 });
       }
       if (saveId !== vm.saveSeen) {
         vm.saveSeen = saveId;
         post(vm.run === 'running'
           ? { t: 'saved', id: saveId, state: null, error: 'the VM is running; pause it first' }
           : { t: 'saved', id: saveId, state: ${JSON.stringify(FAKE_STATE)} });
       }
     };
     for (;;) {
       Atomics.wait(thread, ${ThreadCtl.WAKE}, wakeSeen, 2);
       const wake = Atomics.load(thread, ${ThreadCtl.WAKE});
       if (wake === wakeSeen) continue;
       wakeSeen = wake;
       for (let msg = receiveMessageOnPort(parentPort); msg; msg = receiveMessageOnPort(parentPort)) {
         const c = msg.message;
         if (c.t === 'exit') process.exit(0);
         if (c.t === 'add') {
           const vm = { id: c.id, init: c.init, ctl: new Int32Array(c.init.control), seen: -1,
             saveSeen: 0, run: 'created', incoming: c.init.incoming, commands: [] };
           vms.set(c.id, vm);
           parentPort.postMessage({ id: c.id, m: c.init.incoming ? { t: 'spawned' } : { t: 'booted', entry: 0 } });
         } else if (c.t === 'cmd') {
           vms.get(c.id)?.commands.push(c.cmd);
         }
       }
       for (const vm of [...vms.values()]) step(vm);
     }`,
  );
  return pathToFileURL(file);
}

const threads = new VcpuThreadPool(standInWorker(), { threads: 1, spare: 0 });
afterAll(() => threads.close());
const logger = createLogger({ name: 'vm-test', level: 'silent', format: 'json' });

function standInRam(name: string): { spec: VmSpec; ram: RamBacking } {
  const main: RamBlockSpec = {
    id: MAIN_BLOCK_ID,
    guestBase: RAM_WINDOW.base,
    size: 1 << 20,
    backend: 'private',
    region: '',
  };
  const spec: VmSpec = { name, guest: 'stand-in', ram: [main], args: {} };
  const ram: RamBacking = {
    spec: main,
    buffer: new SharedArrayBuffer(main.size),
    regionRef: null,
    zeroed: true,
    close: () => Promise.resolve(),
    abandon: () => undefined,
  };
  return { spec, ram };
}

async function bootStandIn(name: string): Promise<Vm> {
  const { spec, ram } = standInRam(name);
  const guest = { name: 'stand-in', bytes: new Uint8Array(0) } as unknown as GuestImage;
  const vm = await Vm.boot(spec, [ram], guest, { vmmId: 'vmm-test', logger, threads });
  await vm.start();
  return vm;
}

describe('Vm.pauseAndSave', () => {
  it('pauses and saves in one request, calling onPaused with the stop stamp', async () => {
    const vm = await bootStandIn('pause');
    const calls: number[] = [];
    const saved = await vm.pauseAndSave((at) => calls.push(at));
    expect(calls).toEqual([PAUSED_AT]);
    expect(saved).toEqual({ published: false, pausedAtMs: PAUSED_AT, state: FAKE_STATE });
    expect(vm.currentState).toBe('paused');

    // Already paused: saved only.
    const again = await vm.pauseAndSave((at) => calls.push(at));
    expect(again).toMatchObject({ published: false, state: FAKE_STATE });
    expect(calls).toHaveLength(2);
    expect(vm.currentState).toBe('paused');
    await vm.destroy();
  });

  it('fails without calling onPaused when the vCPU stops for another reason', async () => {
    const vm = await bootStandIn('power-off');
    let called = false;
    await expect(
      vm.pauseAndSave(() => {
        called = true;
      }),
    ).rejects.toMatchObject({ code: 'VMM_INVALID_STATE' });
    expect(called).toBe(false);
    expect(vm.currentState).toBe('powered-off');
    await vm.destroy();
  });
});

describe('Vm.runIncoming', () => {
  it('resolves with the run stamp when the start is reported before the boot', async () => {
    const { spec, ram } = standInRam('incoming');
    const vm = Vm.spawnIncoming(spec, [ram], true, { vmmId: 'vmm-test', logger, threads });
    await vm.spawned();
    const at = await vm.runIncoming(FAKE_STATE as unknown as MachineState);
    expect(at).toBe(RUN_AT);
    expect(vm.currentState).toBe('running');
    expect(vm.info().ready).toBe(true); // its state had rung READY before it was saved
    await vm.destroy();
  });
});

describe('Vm.beginSave', () => {
  it('refuses pause and resume from outside while a save holds the run state, and a destroy waits for it', async () => {
    const vm = await bootStandIn('saving');
    const run = vm.beginSave();
    expect(() => vm.beginSave()).toThrow(/being saved already/);
    expect(() => vm.pause()).toThrow(expect.objectContaining({ code: 'VMM_INVALID_STATE' }));
    // The save itself pauses and resumes through what beginSave gave it.
    await run.pause();
    expect(vm.currentState).toBe('paused');
    expect(() => vm.resume()).toThrow(/being saved/);
    await run.resume();
    expect(vm.currentState).toBe('running');
    let destroyed = false;
    const destroying = vm.destroy().then(() => (destroyed = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(destroyed).toBe(false);
    expect(vm.destroyed).toBe(false);
    await run.pause(); // the save still has the VM
    run.end();
    await destroying;
    expect(vm.destroyed).toBe(true);
  });

  it('lets pause and resume through again once the save has ended', async () => {
    const vm = await bootStandIn('saved');
    const run = vm.beginSave();
    run.end();
    run.end(); // idempotent
    await vm.pause();
    expect(vm.currentState).toBe('paused');
    await vm.resume();
    expect(vm.currentState).toBe('running');
    vm.beginSave().end(); // a later save may begin
    await vm.destroy();
  });
});
